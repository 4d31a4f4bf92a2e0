/* text.h: the public header of tessera's text folder.
 *
 * The CLIP byte-level BPE tokenizer, exactly as open_clip's SimpleTokenizer encodes: the same
 * text cleaning (ftfy's fixes, HTML unescaping, whitespace collapsing, Python's lower-casing),
 * the same pre-tokenisation pattern, the same vocabulary order and special ids, the same
 * context-length truncation and zero padding. It reads the merges file open_clip and CLIP ship
 * (bpe_simple_vocab_16e6.txt.gz); tessera does not ship that file. A deterministic BPE trainer
 * writes merges files of the same format, for users without the CLIP file.
 *
 * Beside the tokenizer: the CLIP text transformer as open_clip builds it (its TextTransformer,
 * and the text half of its CLIP model), with open_clip's parameter names, its initialisation,
 * its causal mask and end-of-text pooling; a bidirectional variant that masks padding keys; and
 * a BERT-style masked-language-modelling head with its 80/10/10 masking.
 *
 * What this header is not: a general tokenizer library. There is no SentencePiece, no
 * WordPiece, no Hugging Face tokenizer.json; only the CLIP scheme and the merges format. Nor is
 * it the encoder registry or the training task (cli/ wires these pieces into a ts_task).
 *
 * Shape letters of the text transformer: B batch, L tokens of the input (at most T), T the
 * context length (rows of the positional table), C width, E out_dim, V vocabulary.
 *
 * Threads: a tokenizer keeps scratch buffers and a cache of recent words, so one tokenizer
 * must not be used by two threads at once. Give each loader worker its own (loading takes a
 * few tens of milliseconds).
 */
#ifndef TESSERA_TEXT_H
#define TESSERA_TEXT_H

#include "tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The context length of every CLIP model. */
#define TS_CLIP_CONTEXT 77

typedef struct ts_tokenizer ts_tokenizer;

/* Load a tokenizer from a merges file: gzip (read with zlib) or plain text. The first line is
 * a version header ("#version: 0.2"); each further line is one merge "a b", ranked by its
 * position. As open_clip, at most 48894 merges are read (49152 - 256 - 2), so the vocabulary
 * is the 256 byte symbols, the 256 byte symbols with "</w>", the merged strings in order, and
 * <start_of_text>, <end_of_text> last (49406 and 49407 for the CLIP file).
 * Errors, each naming the file: TS_ERR_IO (cannot open or read), TS_ERR_FORMAT (not gzip
 * data or a truncated gzip stream, invalid UTF-8, no version header, a merge line that is not
 * two symbols, no merges at all). On success *out is the caller's, freed with
 * ts_tokenizer_free. */
ts_status ts_tokenizer_load(const char *merges_path, ts_tokenizer **out, ts_err *err);
void ts_tokenizer_free(ts_tokenizer *t); /* NULL is a no-op */

int ts_tokenizer_vocab_size(const ts_tokenizer *t); /* 49408 for the CLIP file */
int32_t ts_tokenizer_sot(const ts_tokenizer *t);    /* <start_of_text> */
int32_t ts_tokenizer_eot(const ts_tokenizer *t);    /* <end_of_text> */

/* Encode len bytes of UTF-8 text (invalid sequences are read as U+FFFD, as Python's
 * errors="replace") into token ids, without start and end tokens: open_clip's
 * tokenizer.encode. Writes at most cap ids to ids (which may be NULL when cap is 0) and
 * returns how many the text has, which may exceed cap. Never fails. */
int64_t ts_tokenizer_encode(ts_tokenizer *t, const char *text, size_t len, int32_t *ids,
                            int64_t cap);

/* One row of open_clip's tokenizer(texts): <start_of_text>, the ids, <end_of_text>, cut to
 * ctx ids with <end_of_text> kept last, then zeros up to ctx. row has ctx entries (ctx >= 2).
 * Returns the number of ids before the padding. */
int ts_tokenizer_encode_context(ts_tokenizer *t, const char *text, size_t len, int32_t *row,
                                int ctx);

/* The text as the tokenizer sees it before splitting: ftfy-fixed, HTML-unescaped twice,
 * whitespace collapsed, stripped and lower-cased (open_clip's clean="lower"). Returns a
 * malloc'ed NUL-terminated UTF-8 string the caller frees, with its length in *out_len when
 * out_len is not NULL; NULL only when memory runs out. */
char *ts_tokenizer_clean(ts_tokenizer *t, const char *text, size_t len, size_t *out_len);

/* Decode ids as open_clip's tokenizer.decode: the tokens' bytes joined, read as UTF-8 with
 * invalid sequences replaced, and each "</w>" turned into a space. On success *out is a
 * malloc'ed NUL-terminated string the caller frees. TS_ERR_DATA names the first id that is
 * not in the vocabulary. */
ts_status ts_tokenizer_decode(const ts_tokenizer *t, const int32_t *ids, int64_t n, char **out,
                              ts_err *err);

/* Train BPE merges on text files (one caption or sentence a line; every line is cleaned and
 * split exactly as the tokenizer does) until the vocabulary has vocab_size entries (514 +
 * the number of merges; at most 49408) or no pair occurs twice. Each step merges the most
 * frequent adjacent pair; ties go to the pair whose two symbols come first in byte order,
 * so the output is the same on every run and machine. Writes out_path as gzip with the
 * header line "#version: 0.2" and one merge a line, the format ts_tokenizer_load and
 * open_clip read. Writes to out_path + ".tmp" and renames. The number of merges written goes
 * to *n_merges when it is not NULL.
 * Errors: TS_ERR_USAGE (vocab_size out of range, no corpus), TS_ERR_IO naming the file that
 * cannot be read or written, TS_ERR_DATA when the corpus has no text. */
ts_status ts_bpe_train(const char *const *corpus_paths, int n_paths, int vocab_size,
                       const char *out_path, int *n_merges, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* The text transformer                                                                     */

/* How the token sequence becomes one vector (open_clip's text_global_pool pool_type). */
typedef enum {
    TS_TEXT_POOL_ARGMAX, /* 'argmax': the row of the largest id (CLIP's <end_of_text>); on ties
                          * the first, as torch.argmax */
    TS_TEXT_POOL_EOS,    /* 'eos': the first row whose id is eos_id (row 0 when there is none) */
    TS_TEXT_POOL_FIRST,  /* 'first': row 0 */
    TS_TEXT_POOL_LAST,   /* 'last': row L - 1 */
} ts_text_pool;

/* The size and behaviour of a text tower. ts_text_cfg_named fills it from open_clip's model
 * configs; any numbers are allowed as long as ts_text_cfg_check accepts them. */
typedef struct ts_text_cfg {
    int context_length; /* T: rows of the positional table, the longest input */
    int vocab_size;     /* V: rows of the token embedding (49408 for CLIP) */
    int width;          /* C */
    int layers;         /* transformer blocks */
    int heads;          /* attention heads; open_clip's configs use width / 64 */
    float mlp_ratio;    /* hidden width of the MLP is (int)(width * mlp_ratio) */
    int out_dim;        /* E, columns of text_projection; 0: no projection, pooled is (B, C) */
    ts_act act;         /* TS_ACT_GELU, or TS_ACT_QUICK_GELU for the "-quickgelu" configs */
    int causal;         /* 1: CLIP's causal mask; 0: bidirectional */
    int pad_mask;       /* bidirectional only: tokens equal to pad_id are masked out as keys
                         * (open_clip's use_pad_mask); ignored when causal, as open_clip does */
    int pad_id;         /* 0 as open_clip's tokenizer pads */
    int eos_id;         /* for TS_TEXT_POOL_EOS */
    ts_text_pool pool;
    float ln_eps;       /* 1e-5 as open_clip */
    float drop_path;    /* stochastic depth of every block in training; 0 = off */
} ts_text_cfg;

/* The configuration open_clip's model config NAME gives its text tower: "ViT-B-32",
 * "ViT-B-16", "ViT-L-14", "ViT-H-14", "RN50", ... (see ts_text_cfg_names); a "-quickgelu"
 * suffix selects QuickGELU. Context 77, vocabulary 49408, causal, argmax pooling, out_dim the
 * model's embed_dim. TS_ERR_RECIPE listing the valid names when NAME is unknown. */
ts_status ts_text_cfg_named(const char *name, ts_text_cfg *cfg, ts_err *err);
extern const char *const ts_text_cfg_names[]; /* NULL-terminated */
/* TS_OK when cfg describes a tower that can be built; TS_ERR_RECIPE naming the field otherwise. */
ts_status ts_text_cfg_check(const ts_text_cfg *cfg, ts_err *err);

/* Read a recipe section (e.g. "model.text") into cfg by its key table:
 *   type            text (required)
 *   config          an open_clip config name whose text tower gives the defaults of the keys
 *                   below ("" = none; the resolved recipe then holds the named values)
 *   context_length, vocab_size, width, layers, heads, mlp_ratio, out_dim, ln_eps, drop_path
 *   act             gelu | quick_gelu
 *   causal          true (CLIP) | false (bidirectional)
 *   pad_mask        mask pad_id keys when bidirectional
 *   pad_id, eos_id
 *   pooling         argmax | eos | first | last
 * vocab_size 0 means the tokenizer's. When tokenizer_vocab > 0 a vocab_size that differs from
 * it is an error naming both numbers and the file:line of the key. Errors: TS_ERR_RECIPE. */
ts_status ts_text_cfg_parse(ts_recipe *r, const char *section, int tokenizer_vocab,
                            ts_text_cfg *cfg, ts_err *err);

/* Trainable parameters of a tower of this configuration, as open_clip counts them:
 * sum(p.numel() for p in text_tower.parameters()). ViT-B-32 63,428,096; ViT-L-14 123,650,304. */
int64_t ts_text_param_count(const ts_text_cfg *cfg);

/* The tower: pointers into the parameter arena plus its configuration. Names under the prefix
 * given to ts_text_init ("" gives a CLIP model's top-level names, "text." the names of
 * open_clip's CustomTextCLIP):
 *   positional_embedding              (T, C)
 *   text_projection                   (C, E), applied as pooled @ text_projection; absent when
 *                                     out_dim is 0
 *   token_embedding.weight            (V, C)
 *   transformer.resblocks.N.*         the core block (ln_1, attn.in_proj_weight, ..., mlp.c_proj)
 *   ln_final.weight, ln_final.bias    (C) */
typedef struct ts_text {
    ts_text_cfg cfg;
    char prefix[128];
    ts_tensor *pos_embed;       /* (T, C) */
    ts_tensor *proj;            /* (C, E) or NULL */
    ts_tensor *tok_embed;       /* (V, C) */
    ts_nn_block *blocks;        /* (layers), malloc'ed by ts_text_init */
    ts_nn_layernorm ln_final;
} ts_text;

/* Register the tower's parameters in p under prefix, in the order of open_clip's
 * TextTransformer.named_parameters(), with its init_parameters(): token_embedding normal std
 * 0.02, positional_embedding std 0.01, in_proj_weight std C^-0.5, out_proj.weight and
 * c_proj.weight std C^-0.5 (2 layers)^-0.5, c_fc.weight std (2C)^-0.5, text_projection std
 * C^-0.5; attention biases zero, MLP biases as torch.nn.Linear's default, layernorms one and
 * zero. Embeddings, norms and biases carry TS_PARAM_NO_DECAY. cfg must pass ts_text_cfg_check
 * (TS_CHECK otherwise). Free with ts_text_free. */
void ts_text_init(ts_text *m, ts_params *p, const char *prefix, const ts_text_cfg *cfg);
/* Release what ts_text_init allocated (not the parameters). NULL is a no-op. */
void ts_text_free(ts_text *m);

/* ids i32 (B, L), 1 <= L <= T, every id in [0, V) -> the pooled embedding (B, E), or (B, C)
 * without a projection. key_pad: NULL, or u8/i32 (B, L) with nonzero = a padding key to mask
 * out; when NULL and the tower is bidirectional with pad_mask, it is made from ids == pad_id.
 * When tokens_out is not NULL it receives the sequence after ln_final (B, L, C). Records on the
 * tape when grad is enabled, like any op. */
ts_tensor *ts_text_forward(ts_ctx *c, const ts_text *m, const ts_tensor *ids,
                           const ts_tensor *key_pad, ts_tensor **tokens_out);

/* Load the tower's parameters by name from the safetensors file at path (F32, BF16 or F16):
 * every tower parameter must be present with the model's shape; other tensors (a CLIP
 * checkpoint's visual.*, logit_scale) are ignored. Every mismatch is named in one
 * TS_ERR_MISMATCH message and nothing is changed when any is found; TS_ERR_IO or TS_ERR_FORMAT
 * when the file cannot be read. */
ts_status ts_text_load(ts_text *m, const char *path, ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Masked language modelling                                                                */

/* BERT's prediction head (its BertLMPredictionHead): dense (C -> C), GELU (erf), layernorm,
 * then the decoder to the vocabulary with its own bias. The decoder is tied to the tower's
 * token_embedding by default, as BERT does (logits = h @ token_embedding.weight^T + bias);
 * untied it is a (V, C) matrix of its own. Names under prefix ("mlm_head."):
 *   dense.weight (C, C), dense.bias (C), layer_norm.weight, layer_norm.bias (C),
 *   decoder.weight (V, C) only when untied, bias (V). */
typedef struct ts_mlm_head {
    ts_nn_linear dense;
    ts_nn_layernorm ln;
    ts_tensor *decoder; /* (V, C): the tower's tok_embed when tied */
    ts_tensor *bias;    /* (V) */
    int tied;
} ts_mlm_head;
/* dense and decoder as torch.nn.Linear's defaults (the decoder weight, when untied, normal with
 * std 0.02 as BERT), biases zero except dense's (Linear default). */
void ts_mlm_head_init(ts_mlm_head *h, ts_params *p, const char *prefix, const ts_text *tower,
                      int tied);
/* tokens (..., C) -> logits (..., V). */
ts_tensor *ts_mlm_head_forward(ts_ctx *c, const ts_mlm_head *h, const ts_tensor *tokens);

/* The masking of BERT: of the positions that are not special, each is chosen with probability
 * mask_prob; a chosen position becomes mask_id with probability p_mask, a random id in
 * [random_lo, random_hi) with probability p_random, and stays as it is otherwise. */
typedef struct ts_mlm_mask_cfg {
    float mask_prob; /* 0.15 */
    float p_mask;    /* 0.8 */
    float p_random;  /* 0.1 */
    int32_t mask_id, random_lo, random_hi;
    int at_least_one; /* choose one position of a row that got none (keeps every row in the loss) */
} ts_mlm_mask_cfg;
/* ids (B, L) are changed in place; targets (B, L) receive the original id at chosen positions
 * and ignore_index elsewhere; special (B, L) nonzero marks positions never chosen (start, end,
 * padding). Draws from r only. Returns the number of chosen positions. */
int64_t ts_mlm_mask(ts_rng *r, const ts_mlm_mask_cfg *cfg, int32_t *ids, int32_t *targets,
                    const uint8_t *special, int64_t B, int64_t L, int32_t ignore_index);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_TEXT_H */
