/* text.h: the public header of tessera's text folder.
 *
 * The CLIP byte-level BPE tokenizer, exactly as open_clip's SimpleTokenizer encodes: the same
 * text cleaning (ftfy's fixes, HTML unescaping, whitespace collapsing, Python's lower-casing),
 * the same pre-tokenisation pattern, the same vocabulary order and special ids, the same
 * context-length truncation and zero padding. It reads the merges file open_clip and CLIP ship
 * (bpe_simple_vocab_16e6.txt.gz); tessera does not ship that file. A deterministic BPE trainer
 * writes merges files of the same format, for users without the CLIP file.
 *
 * What this header is not: a general tokenizer library. There is no SentencePiece, no
 * WordPiece, no Hugging Face tokenizer.json; only the CLIP scheme and the merges format.
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

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_TEXT_H */
