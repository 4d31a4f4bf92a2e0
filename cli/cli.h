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

/* The built-in synthetic sequence task (quickstart-seq). */
ts_status ts_task_seq_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
/* Masked-language pretraining of a bidirectional text encoder (cli/task_mlm.c, quickstart-mlm). */
ts_status ts_task_mlm_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);
/* Masked-autoencoder pretraining of a ViT on built-in images (cli/task_mae.c, quickstart-mae). */
ts_status ts_task_mae_new(ts_recipe *r, uint64_t seed, ts_task **out, ts_err *err);

/* The verbs that live in their own files: argc/argv after the verb; returns the exit status. */
int ts_cmd_tokenize(int argc, char **argv); /* cli/cmd_tokenize.c */
int ts_cmd_data(int argc, char **argv);     /* cli/cmd_data.c */

#endif
