/* cli.h: the factory, the one place that knows every `type:` a recipe may name.
 *
 * The command line asks the factory for a task built from the recipe's model and data sections;
 * the trainer then runs it without knowing what it is. A new model or objective is one file plus
 * one row in the factory's table.
 */
#ifndef TS_CLI_H
#define TS_CLI_H

#include "tessera.h"
#include "loaders.h" /* the pipeline that feeds a CLIP model outside training */

/* Build the task the recipe describes (its model and data sections), with parameters registered
 * and initialised from seed. Unknown types are errors that list the valid ones. */
ts_status ts_factory_task(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
void ts_task_free(ts_task *t); /* NULL is a no-op */
/* The encoder registry (cli/encoders.c): the tower a recipe section names by `type:`, its
 * parameters registered in p under spec->prefix. */
typedef struct ts_enc_spec {
    int modality;        /* 0: an image tower (vit, cswin, video), 1: a text tower (text) */
    const char *prefix;  /* parameter names: "visual." and "" for an open_clip CLIP model */
    int tokenizer_vocab; /* text: the tokenizer's vocabulary (for vocab_size 0), or 0 */
} ts_enc_spec;
typedef struct ts_enc_info {
    int modality;
    int image_size;      /* image towers: the square input side */
    int frames;          /* video towers: frames per clip (0: still images) */
    int context_length;  /* text towers: the longest token sequence */
    int tokens;          /* image towers: the tokens that tokens_out gives per image */
    int token_width;     /* and their width */
    int grid_h, grid_w;  /* image towers: the tokens that lie on a grid over the picture, */
    int grid_first;      /* row-major from token grid_first (after a class token) */
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
/* Vision-language-action policies on HDF5 robot demonstrations (cli/task_vla.c). */
ts_status ts_task_vla_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);

/* ---- A trained policy outside training (cli/task_vla.c): `tessera eval rollout`, `embed` ---- */

/* Open a vla checkpoint (a run folder, a checkpoint folder, or a model.safetensors with its
 * recipe.yaml beside it): build the policy its recipe describes with the sizes, normalisation
 * statistics and action tokenizer the checkpoint holds (the demonstrations are not read; the
 * instruction's BPE vocabulary, data.tokenizer, is), apply the overrides, load every weight by
 * name. The path of the weights goes to weights. The caller frees *task and *recipe
 * (also after a failure). */
ts_status ts_vla_load(const char *checkpoint, const char *const *sets, int nsets, ts_task **task,
                      ts_recipe **recipe, char *weights, size_t wcap, ts_err *err);
/* After weights are loaded into a vla task by name: take its normalisers from the buffers. */
void ts_vla_stats_from_buffers(ts_task *t);

typedef struct ts_vla_rollout_opts {
    int targets;              /* reach2d: targets per episode (0: the recipe's) */
    int instruction_shift;    /* > 0: episode e is given episode e+shift's instruction */
    const char *instruction;  /* not NULL: every episode is given this instruction */
} ts_vla_rollout_opts;
typedef struct ts_vla_rollout_result {
    int episodes, successes;
    int64_t steps;            /* environment steps over all episodes */
    int64_t undecodable;      /* predicted token sequences that did not decode */
    double success_rate;
} ts_vla_rollout_result;
/* Closed-loop evaluation: episodes of the simulated task (reach2d) from seeds seed, seed+1, ...,
 * run side by side; every n_action_steps the policy predicts a chunk from the last
 * n_obs_steps observations and the instruction, and the actions n_obs_steps-1 ..
 * n_obs_steps-1+n_action_steps-1 of it are executed (Diffusion Policy's receding horizon). */
ts_status ts_vla_rollout(ts_task *t, ts_ctx *c, const char *task, int episodes, uint64_t seed,
                         const ts_vla_rollout_opts *opts, ts_vla_rollout_result *res,
                         ts_err *err);
/* Per-window embeddings of the demonstrations of an HDF5 file: for every step of every demo,
 * the mean of the observation tokens of the window that starts there ((n, embed_dim), and an
 * id "demo_N/STEP" per row, malloc'ed). The file needs the model's datasets. */
int ts_vla_embed_dim(const ts_task *t);
ts_status ts_vla_embed_file(ts_task *t, ts_ctx *c, const char *path, float **out, int64_t *n,
                            char ***ids, ts_err *err);

/* CLIP's merges file (bpe_simple_vocab_16e6.txt.gz) where open_clip and CLIP users have it:
 * $TESSERA_BPE, ./, the site-packages of the active venv, ~/.local, /usr/local and /usr (an
 * open_clip or clip package), ~/.cache/clip. Returns a malloc'ed path or NULL, and lists the
 * places looked at in `looked`. */
char *ts_find_clip_merges(char *looked, size_t cap);

/* ---- A trained CLIP model outside training (cli/task_clip.c): `tessera embed` and `eval` ----
 *
 * The functions below take the task that ts_task_clip_new (or ts_clip_load) made; another task
 * type is a programming error (TS_CHECK). Embeddings are (n, E) float32 rows, E = embed_dim;
 * "normalised" means each row divided by its L2 norm (eps 1e-12, as F.normalize). The context
 * c is used in inference mode for the call (its grad and training flags come back after) and
 * its step arena is reset. */
#define TS_CLIP_ZS_MAX 8 /* zero-shot tasks of one evaluation */

/* A model opened from a checkpoint, with everything needed to say where it came from. */
typedef struct ts_clip_model {
    ts_task *task;          /* the clip task, its weights loaded */
    ts_recipe *recipe;      /* the recipe it was built from (with the overrides) */
    char *recipe_text;      /* that recipe file as read: a run's resolved recipe */
    char checkpoint[4096];  /* the model.safetensors whose weights were loaded */
    char recipe_path[4096];
    int image_size;         /* S: the image tower's square input side */
    int context_length;     /* L: token ids per text */
    int embed_dim;          /* E */
    char describe[1024];    /* one line: embed_dim and both towers */
} ts_clip_model;

typedef struct ts_clip_load_opts {
    const char *recipe;      /* NULL: the recipe.yaml beside the weights (a checkpoint folder's) */
    const char *const *sets; /* "key=value" overrides applied to the recipe, e.g. data.workers=4 */
    int nsets;
} ts_clip_load_opts;

/* Open checkpoint, which is a run folder (its latest checkpoint), a checkpoint folder
 * (model.safetensors and recipe.yaml) or a safetensors file (its recipe beside it or given in
 * o->recipe): load the recipe, build the task it describes through ts_factory_task (the recipe's
 * model.init_from and eval.zeroshot are dropped), and load every parameter by name. m is the
 * caller's; ts_clip_model_free releases it (also after a failure). o may be NULL.
 * Errors: TS_ERR_IO naming the checkpoint or the missing recipe; recipe errors as in training;
 * TS_ERR_RECIPE when the recipe is not a clip model; TS_ERR_MISMATCH when the weights do not fit
 * the model the recipe describes: the message lists the parameters that are missing, unexpected
 * or of another shape, and names the recipe. */
ts_status ts_clip_load(ts_clip_model *m, const char *checkpoint, const ts_clip_load_opts *o,
                       ts_err *err);
void ts_clip_model_free(ts_clip_model *m); /* NULL is a no-op */

/* Image embeddings of n preprocessed images (n, 3, S, S) (the eval transform: see
 * ts_clip_eval_pipe_cfg) into out (n, E), in batches of data.batch_size; normalised unless
 * normalize is 0. */
ts_status ts_clip_encode_images(ts_task *t, ts_ctx *c, const float *images /* (n, 3, S, S) */,
                                int64_t n, float *out /* (n, E) */, int normalize, ts_err *err);
/* Text embeddings of n strings, tokenized as open_clip's tokenizer (context L), into out (n, E). */
ts_status ts_clip_encode_texts(ts_task *t, ts_ctx *c, const char *const *texts, int64_t n,
                               float *out /* (n, E) */, int normalize, ts_err *err);
/* The pipeline configuration that feeds ts_clip_encode_images: open_clip's eval transform
 * (resize the shorter side to S with the recipe's interpolation, center crop S, CLIP's
 * normalisation), one pass in stream order, skip policy, batch and workers from the recipe's
 * data section, no prepare hook. The caller may change any field before ts_pipe_open. */
void ts_clip_eval_pipe_cfg(const ts_task *t, ts_pipe_cfg *pc);

/* Replace the task's zero-shot tasks by one named name: nclasses class names, ntemplates prompt
 * templates with {} for the class (templates NULL: "a photo of a {}."), the label of a sample
 * read from its .cls ("cls" or NULL, also a class folder's class) or from a field of its .json.
 * The strings are copied. */
ts_status ts_clip_zeroshot_set(ts_task *t, const char *name, char *const *classes, int nclasses,
                               char *const *templates, int ntemplates, const char *label,
                               ts_err *err);

typedef struct ts_clip_eval_opts {
    const char *data;     /* names the data in messages (a pattern or a folder) */
    int batch, workers;   /* 0: the recipe's data.batch_size, data.workers */
    int retrieval;        /* recall@1/5/10 both ways; samples then need a caption (.txt), and
                             caption i is the match of image i */
    int64_t max_samples;  /* 0: every sample of one pass */
    ts_on_bad on_bad;     /* a bad sample: skip and count it, or stop with its error */
    void (*progress)(void *user, int64_t samples); /* after each batch; NULL: none */
    void *progress_user;
} ts_clip_eval_opts;

typedef struct ts_clip_zs_result {
    const char *name;              /* the task's name (owned by the task) */
    int nclasses;
    int64_t counted, top1, top5;   /* labelled samples; those whose class ranked first, top 5 */
    int64_t *class_count, *class_top1; /* (nclasses) the same by true class */
} ts_clip_zs_result;

typedef struct ts_clip_eval_result {
    int64_t samples, skipped;      /* evaluated; left out as bad */
    int nzs;
    ts_clip_zs_result zs[TS_CLIP_ZS_MAX];
    int retrieval;                 /* i2t and t2i were computed */
    double i2t[3], t2i[3];         /* image->text and text->image recall@1, @5, @10 */
} ts_clip_eval_result;

/* One pass over src (which it owns from here on, also on failure) through the eval pipeline:
 * every zero-shot task of the task (open_clip's prompt-template ensembling: the class
 * embedding is the normalised mean of its normalised template embeddings; a sample is right at
 * k when fewer than k classes score strictly higher than its own), and retrieval if asked.
 * The training-time evaluation (data.val, eval.zeroshot) is this function too. res is filled
 * as far as it got; release it with ts_clip_eval_result_free, also after a failure.
 * Errors: the pipeline's (a bad sample under the fail policy), TS_ERR_DATA when no sample came
 * through or a zero-shot task had no labelled sample (naming o->data). */
ts_status ts_clip_evaluate(ts_task *t, ts_ctx *c, ts_source *src, const ts_clip_eval_opts *o,
                           ts_clip_eval_result *res, ts_err *err);
void ts_clip_eval_result_free(ts_clip_eval_result *r); /* NULL is a no-op */

/* The non-empty lines of a text file (trailing spaces and CR cut), malloc'ed; *out is freed by
 * ts_clip_free_lines. TS_ERR_IO naming the file, TS_ERR_DATA when it has no line. */
ts_status ts_clip_read_lines(const char *path, char ***out, int *n, ts_err *err);
void ts_clip_free_lines(char **v, int n);

/* The verbs that live in their own files: argc/argv after the verb; returns the exit status. */
int ts_cmd_tokenize(int argc, char **argv); /* cli/cmd_tokenize.c */
int ts_cmd_data(int argc, char **argv);     /* cli/cmd_data.c */
int ts_cmd_export(int argc, char **argv);   /* cli/cmd_export.c */
int ts_cmd_embed(int argc, char **argv);    /* cli/cmd_embed.c */
int ts_cmd_eval(int argc, char **argv);     /* cli/cmd_eval.c */

#endif
