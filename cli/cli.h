/* cli.h: the factory, the one place that knows every `type:` a recipe may name.
 *
 * The command line asks the factory for a task built from the recipe's model and data sections;
 * the trainer then runs it without knowing what it is. A new model or objective is one file plus
 * one row in the factory's table.
 */
#ifndef TS_CLI_H
#define TS_CLI_H

#include "tessera.h"

/* Build the task the recipe describes (its model and data sections), with parameters registered
 * and initialised from seed. Unknown types are errors that list the valid ones. */
ts_status ts_factory_task(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
void ts_task_free(ts_task *t); /* NULL is a no-op */
/* The encoder registry (cli/encoders.c): the tower a recipe section names by `type:`, its
 * parameters registered in p under spec->prefix. */
typedef struct ts_enc_spec {
    int modality;        /* 0: an image tower (vit, cswin), 1: a text tower (text) */
    const char *prefix;  /* parameter names: "visual." and "" for an open_clip CLIP model */
    int tokenizer_vocab; /* text: the tokenizer's vocabulary (for vocab_size 0), or 0 */
} ts_enc_spec;
typedef struct ts_enc_info {
    int modality;
    int image_size;      /* image towers: the square input side */
    int context_length;  /* text towers: the longest token sequence */
    char describe[256];  /* one line for the log */
} ts_enc_info;
ts_status ts_factory_encoder(ts_recipe *r, const char *section, ts_params *p,
                             const ts_enc_spec *spec, ts_encoder **out, ts_enc_info *info,
                             ts_err *err);


/* The built-in synthetic sequence task (quickstart-seq). */
ts_status ts_task_seq_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
/* Masked-language pretraining of a bidirectional text encoder (cli/task_mlm.c, quickstart-mlm). */
ts_status ts_task_mlm_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
/* Masked-autoencoder pretraining of a ViT on built-in images (cli/task_mae.c, quickstart-mae). */
ts_status ts_task_mae_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
/* CLIP-style contrastive pretraining of an image and a text tower on WebDataset shards
 * (cli/task_clip.c, quickstart-clip). */
ts_status ts_task_clip_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);

/* CLIP's merges file (bpe_simple_vocab_16e6.txt.gz) where open_clip and CLIP users have it:
 * $TESSERA_BPE, ./, the site-packages of the active venv, ~/.local, /usr/local and /usr (an
 * open_clip or clip package), ~/.cache/clip. Returns a malloc'ed path or NULL, and lists the
 * places looked at in `looked`. */
char *ts_find_clip_merges(char *looked, size_t cap);

/* The verbs that live in their own files: argc/argv after the verb; returns the exit status. */
int ts_cmd_tokenize(int argc, char **argv); /* cli/cmd_tokenize.c */
int ts_cmd_data(int argc, char **argv);     /* cli/cmd_data.c */
int ts_cmd_export(int argc, char **argv);   /* cli/cmd_export.c */

#endif
