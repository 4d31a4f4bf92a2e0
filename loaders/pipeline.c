/* pipeline.c: the threaded batch pipeline between a dataset format and the trainer.
 *
 * Worker threads (pthreads) take samples from the source one at a time under one lock, in the
 * order the source and the shuffle buffer give them: that order, and where each sample goes,
 * depend only on the seed, never on the workers. Sample i of an epoch (on this rank) belongs to
 * batch i / B at row i % B; batches live in a pool of slots allocated once and reused (slot =
 * batch number mod slots), which is the bounded queue between workers and consumer. A worker
 * decodes, transforms (its RNG seeded from (seed, epoch, rank, i)), normalises into the row and
 * calls the prepare hook, all outside the lock; the consumer takes whole batches in order.
 *
 * A bad sample (found while reading or decoding) leaves its row empty: with the skip policy the
 * consumer closes the gap (rows stay in stream order, n < B), counts it by reason and tells the
 * cfg's on_skip hook, when there is one, which sample it was and why; with the fail policy the first bad sample of the batch stops the pipeline with its message. Never a
 * silent zero image: an empty row is never delivered.
 *
 * What this file is not: a decoder, a format reader or a GPU uploader. The slots' images and
 * prepare rows are page-aligned host memory, shown to the cfg's on_buffer hook, which a CUDA
 * build uses to page-lock them for asynchronous copies to the device.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loaders-impl.h"

enum { SLOT_FREE, SLOT_FILLING, SLOT_CLOSED, SLOT_DELIVERED };
enum { ROW_EMPTY, ROW_PENDING, ROW_GOOD, ROW_BAD };

#define ROW_MSG 1024 /* as ts_err.msg */
#define LOG_PER_REASON 10 /* bad samples logged by name per reason; the rest only counted */

/* One batch buffer of the pool. Rows are written by workers without the lock (each row by one
 * worker); everything else is under the pipeline's lock. */
typedef struct slot {
    int state;
    int64_t g;              /* batch number since the pipeline opened */
    int64_t epoch, index;   /* epoch, and batch number within it */
    int64_t end_pos;        /* stream position after the last row assigned */
    int assigned, done;     /* rows given to workers, rows finished */
    int last_row;           /* 1 + the highest row assigned */
    int dropped;            /* the partial last batch of an epoch under drop_last */
    float *images;          /* (B, 3, S, S) */
    int64_t *labels;        /* (B) */
    uint8_t *extra;         /* (B, prepare_bytes) */
    int64_t *sidx;          /* (B) */
    char (*keys)[64];       /* (B) */
    uint8_t *row_state;     /* (B) ROW_* */
    int *row_bad;           /* (B) ts_bad_reason of a bad row */
    char (*row_msg)[ROW_MSG]; /* (B) message of a bad row */
    char (*row_where)[ROW_MSG]; /* (B) where and path of a bad row's sample (with on_skip) */
    char (*row_path)[ROW_MSG];
    int64_t src_bad;        /* shards skipped while this batch was filling */
    char src_msg[ROW_MSG];  /* the first of them */
    char (*src_msgs)[ROW_MSG]; /* all of them (with on_skip), src_cap allocated */
    int64_t src_cap;
    int has_err;            /* a source error under the fail policy (after every row) */
    ts_err err;
} slot;

typedef struct worker {
    struct ts_pipe *p;
    pthread_t thread;
    ts_sample *sample;
    ts_image_u8 im, tmp, out;
    uint8_t *frames;  /* video: K decoded frames (K, S, S, 3), grown as needed */
    size_t frames_cap;
} worker;

struct ts_pipe {
    ts_pipe_cfg cfg;
    ts_source *src;
    int B, nslots;
    size_t img_floats;      /* 3 * S * S, times K for video clips */
    slot *slots;
    worker *workers;
    int nstarted;
    pthread_mutex_t mu;
    pthread_cond_t cv_slot; /* a slot was freed, or stop */
    pthread_cond_t cv_done; /* a row finished or a batch closed, or the end */

    /* The reader: under mu. */
    int64_t epoch, next_i;  /* the epoch and stream position of the next sample */
    int64_t epoch_got;      /* samples the source gave in this epoch */
    int begun;              /* begin() was called for this epoch */
    int64_t skip;           /* positions to pass over when restoring */
    int64_t fill_g;         /* the batch being filled */
    int ended, stop;
    ts_sample **buf;        /* the shuffle buffer: nbuf samples held of kbuf */
    int nbuf, kbuf, src_end;
    ts_rng buf_rng;

    /* The consumer: under mu. */
    int64_t next_g;
    int held;               /* the slot delivered last, -1 when none */
    ts_pipe_pos pos;
    int64_t bad[TS_BAD_COUNT];
    int64_t logged[TS_BAD_COUNT];
    int failed;
    ts_err fail_err;
};

/* RandomResizedCrop's box, drawn when the decoder knows the image's size (ts_box_fn). */
typedef struct rrc_draw {
    ts_rng *rng;
    const float *scale, *ratio;
} rrc_draw;

static ts_crop_box rrc_pick(void *user, int w, int h) {
    rrc_draw *d = user;
    return ts_random_resized_crop_box(d->rng, w, h, d->scale, d->ratio);
}

/* The seed of a stream identified by (seed, epoch, rank, what). */
static uint64_t stream_seed(uint64_t seed, int64_t epoch, int rank, uint64_t what) {
    return ts__mix64(seed ^
                     ts__mix64((uint64_t)epoch ^ ts__mix64((uint64_t)rank ^ ts__mix64(what))));
}

static void *page_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, n ? n : 1)) return NULL;
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* The reader (always under mu)                                                             */

static ts_status pull(ts_pipe *p, ts_sample **io, int *got, ts_err *err) {
    ts_source *src = p->src;
    if (p->kbuf <= 1) return src->next(src, *io, got, err);
    while (!p->src_end && p->nbuf < p->kbuf) {
        int g;
        ts_status st = src->next(src, p->buf[p->nbuf], &g, err);
        if (st) return st;
        if (!g) p->src_end = 1;
        else p->nbuf++;
    }
    *got = 0;
    if (!p->nbuf) return TS_OK;
    /* webdataset's shuffle: a uniformly chosen sample of the buffer leaves it. */
    int k = (int)(ts_rng_next(&p->buf_rng) % (uint64_t)p->nbuf);
    ts_sample *t = p->buf[k];
    p->buf[k] = p->buf[p->nbuf - 1];
    p->buf[p->nbuf - 1] = *io;
    *io = t;
    p->nbuf--;
    *got = 1;
    return TS_OK;
}

static void slot_open(ts_pipe *p, slot *s) {
    s->state = SLOT_FILLING;
    s->g = p->fill_g;
    s->epoch = p->epoch;
    s->index = p->next_i / p->B;
    s->end_pos = p->next_i;
    s->assigned = s->done = s->last_row = s->dropped = 0;
    memset(s->row_state, ROW_EMPTY, (size_t)p->B);
    s->src_bad = 0;
    s->src_msg[0] = 0;
    s->has_err = 0;
}

static void slot_close(ts_pipe *p, slot *s) {
    s->state = SLOT_CLOSED;
    p->fill_g++;
    pthread_cond_broadcast(&p->cv_done);
}

/* Stop reading with an error that the consumer meets after the rows read before it. */
static void reader_fail(ts_pipe *p, slot *s, const ts_err *e) {
    if (s->state == SLOT_FREE) slot_open(p, s);
    s->has_err = 1;
    s->err = *e;
    slot_close(p, s);
    p->ended = 1;
}

/* Give the calling worker its next sample and where it goes; 0 when there is none. */
static int reader_step(ts_pipe *p, worker *w, slot **out, int *row) {
    const ts_pipe_cfg *c = &p->cfg;
    for (;;) {
        if (p->stop || p->ended) return 0;
        slot *s = &p->slots[p->fill_g % p->nslots];
        if (!(s->state == SLOT_FREE || (s->state == SLOT_FILLING && s->g == p->fill_g))) {
            pthread_cond_wait(&p->cv_slot, &p->mu);
            continue;
        }
        ts_err e = { 0 };
        ts_status st = TS_OK;
        if (!p->begun) {
            st = p->src->begin(p->src, c->seed, p->epoch, c->rank, c->world, &e);
            if (st) {
                reader_fail(p, s, &e);
                return 0;
            }
            p->begun = 1;
            p->src_end = 0;
            p->nbuf = 0;
            p->epoch_got = 0;
            ts_rng_seed(&p->buf_rng, stream_seed(c->seed, p->epoch, c->rank, 0x5b0ff));
        }
        int got = 0;
        st = pull(p, &w->sample, &got, &e);
        if (st) {
            if (c->on_bad == TS_ON_BAD_SKIP && st != TS_ERR_NOMEM && st != TS_ERR_USAGE) {
                if (s->state == SLOT_FREE) slot_open(p, s);
                if (c->on_skip && s->src_bad == s->src_cap) {
                    int64_t cap = s->src_cap ? 2 * s->src_cap : 4;
                    char (*m)[ROW_MSG] = realloc(s->src_msgs, (size_t)cap * sizeof *m);
                    if (m) s->src_msgs = m, s->src_cap = cap;
                }
                if (s->src_bad < s->src_cap)
                    snprintf(s->src_msgs[s->src_bad], ROW_MSG, "%s", e.msg);
                if (!s->src_bad++) snprintf(s->src_msg, sizeof s->src_msg, "%s", e.msg);
                continue;
            }
            reader_fail(p, s, &e);
            return 0;
        }
        if (!got) {
            if (!p->epoch_got) {
                ts_fail(&e, TS_ERR_DATA, "%s source: epoch %lld has no samples on rank %d of %d",
                        p->src->type, (long long)p->epoch, c->rank, c->world);
                reader_fail(p, s, &e);
                return 0;
            }
            if (s->state == SLOT_FILLING) {
                s->dropped = c->drop_last && s->last_row < p->B;
                slot_close(p, s);
            }
            p->epoch++;
            p->next_i = 0;
            p->skip = 0;
            p->begun = 0;
            if (c->epochs > 0 && p->epoch >= c->epochs) {
                p->ended = 1;
                pthread_cond_broadcast(&p->cv_done);
                return 0;
            }
            continue;
        }
        p->epoch_got++;
        w->sample->index = p->next_i;
        if (p->skip > 0) { /* restoring a position: these were delivered before */
            p->skip--;
            p->next_i++;
            continue;
        }
        if (s->state == SLOT_FREE) slot_open(p, s);
        int r = (int)(p->next_i % p->B);
        s->row_state[r] = ROW_PENDING;
        s->assigned++;
        s->last_row = r + 1;
        s->end_pos = ++p->next_i;
        *out = s;
        *row = r;
        if (r == p->B - 1) slot_close(p, s);
        return 1;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The workers                                                                              */

static int bad_of_status(ts_status st) {
    return st == TS_ERR_UNSUPPORTED ? TS_BAD_UNSUPPORTED : st == TS_ERR_IO ? TS_BAD_FILE
                                                                            : TS_BAD_DECODE;
}

/* A video clip's row: K frames spread uniformly over the whole clip (ts_video_uniform_indices),
 * each resized to S x S (bicubic) and normalised, (K, 3, S, S). FFmpeg reads the .mp4 bytes
 * through an in-memory file (memfd), so nothing touches the disk. */
static int video_row(ts_pipe *p, worker *w, const ts_sample *sm, float *row, char *msg) {
    const ts_xform_cfg *x = &p->cfg.xform;
    int K = x->frames, S = x->size;
    if (!sm->has_video || sm->video.n == 0) {
        snprintf(msg, ROW_MSG, "%.480s: no video (.mp4)", sm->where);
        return TS_BAD_MISSING;
    }
    size_t need = (size_t)K * (size_t)S * (size_t)S * 3;
    if (w->frames_cap < need) {
        uint8_t *f = realloc(w->frames, need);
        if (!f) {
            snprintf(msg, ROW_MSG, "%.480s: out of memory for %d frames", sm->where, K);
            return TS_BAD_DECODE;
        }
        w->frames = f;
        w->frames_cap = need;
    }
    int fd = memfd_create("tessera-clip", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, ROW_MSG, "%.480s: cannot make an in-memory file for the video", sm->where);
        return TS_BAD_DECODE;
    }
    size_t done = 0;
    while (done < sm->video.n) {
        ssize_t k = write(fd, sm->video.data + done, sm->video.n - done);
        if (k <= 0) break;
        done += (size_t)k;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ts_err e = { 0 };
    ts_video *v = NULL;
    int64_t idx[256];
    ts_status st = done < sm->video.n ? ts_fail(&e, TS_ERR_IO, "cannot buffer the video")
                   : K > 256 ? ts_fail(&e, TS_ERR_DATA, "at most 256 frames a clip")
                             : ts_video_open(&v, path, 1, &e);
    if (!st) st = ts_video_uniform_indices(v, K, 0.0, 0.0, idx, &e);
    if (!st) st = ts_video_read(v, idx, K, S, S, TS_VSCALE_BICUBIC, w->frames, &e);
    ts_video_close(v);
    close(fd);
    if (st) {
        snprintf(msg, ROW_MSG, "%.300s: %.400s", sm->where, e.msg);
        return TS_BAD_DECODE;
    }
    int cl = x->mean[0] == 0 && x->mean[1] == 0 && x->mean[2] == 0;
    for (int k = 0; k < K; k++) {
        ts_image_u8 f = { .w = S, .h = S, .data = w->frames + (size_t)k * S * S * 3 };
        ts_image_to_chw(&f, cl ? TS_CLIP_MEAN : x->mean, cl ? TS_CLIP_STD : x->std,
                        row + (size_t)k * 3 * S * S);
    }
    return TS_BAD_NONE;
}

/* Turn sample sm into row r of slot s. Returns TS_BAD_NONE or the reason, with msg set. */
static int process(ts_pipe *p, worker *w, ts_sample *sm, slot *s, int r, char *msg) {
    const ts_pipe_cfg *c = &p->cfg;
    const ts_xform_cfg *x = &c->xform;
    ts_err e = { 0 };
    if (sm->bad) {
        snprintf(msg, ROW_MSG, "%s", sm->bad_msg);
        return sm->bad;
    }
    if (c->need_text && !sm->has_text) {
        snprintf(msg, ROW_MSG, "%.480s: no caption (.txt)", sm->where);
        return TS_BAD_MISSING;
    }
    if (c->need_label && !sm->has_label) {
        snprintf(msg, ROW_MSG, "%.480s: no label (.cls)", sm->where);
        return TS_BAD_MISSING;
    }
    if (x->mode != TS_XFORM_NONE && x->frames > 0) {
        int bad = video_row(p, w, sm, s->images + (size_t)r * p->img_floats, msg);
        if (bad) return bad;
    } else if (x->mode != TS_XFORM_NONE) {
        ts_decode_opts opts = { .min_short = x->decode_min_short };
        ts_status st;
        ts_rng rng;
        ts_rng_seed(&rng, stream_seed(c->seed, s->epoch, c->rank, 0x1000000ull + (uint64_t)sm->index));
        int S = x->size, train = x->mode == TS_XFORM_TRAIN;
        /* Training draws RandomResizedCrop's box from the image's size alone, so the decoder
         * is given the draw and decodes only the box (a JPEG's pixels outside it are never
         * computed); the box, and every pixel in it, are what a full decode and crop give. */
        rrc_draw draw = { &rng, x->scale[1] > 0 ? x->scale : TS_RRC_SCALE,
                          x->ratio[1] > 0 ? x->ratio : TS_RRC_RATIO };
        ts_crop_box where = { 0, 0, 0, 0 };
        if (sm->image.n) {
            st = train ? ts_image_decode_box(&w->im, sm->image.data, sm->image.n, sm->where, &opts,
                                             rrc_pick, &draw, &where, NULL, &e)
                       : ts_image_decode(&w->im, sm->image.data, sm->image.n, sm->where, &opts,
                                         NULL, &e);
        } else if (sm->path.n) {
            const char *path = (const char *)sm->path.data;
            st = train ? ts_image_load_box(&w->im, path, &opts, rrc_pick, &draw, &where, NULL, &e)
                       : ts_image_load(&w->im, path, &opts, NULL, &e);
            if (st) {
                /* Name the row as well as the file. */
                char m[sizeof e.msg];
                snprintf(m, sizeof m, "%s", e.msg);
                snprintf(e.msg, sizeof e.msg, "%.400s: %.600s", sm->where, m);
            }
        } else {
            snprintf(msg, ROW_MSG, "%.460s: no image (jpg, jpeg, png or webp)", sm->where);
            return TS_BAD_MISSING;
        }
        if (st) {
            snprintf(msg, ROW_MSG, "%s", e.msg);
            return bad_of_status(st);
        }
        if (w->im.w < 1 || w->im.h < 1) {
            snprintf(msg, ROW_MSG, "%.480s: empty image", sm->where);
            return TS_BAD_DECODE;
        }
        int flip = 0;
        if (train) {
            st = ts_image_resized_crop(&w->out, &w->im, where, S, S, x->interp, &e);
            flip = !st && x->hflip > 0 && ts_rng_uniform(&rng) < x->hflip;
        } else {
            st = ts_image_resize_short(&w->tmp, &w->im, x->resize > 0 ? x->resize : S, x->interp,
                                       &e);
            if (!st) st = ts_image_center_crop(&w->out, &w->tmp, S, S, &e);
        }
        if (st) {
            snprintf(msg, ROW_MSG, "%s", e.msg);
            return TS_BAD_DECODE;
        }
        int cl = x->mean[0] == 0 && x->mean[1] == 0 && x->mean[2] == 0;
        (flip ? ts_image_to_chw_hflip : ts_image_to_chw)(&w->out, cl ? TS_CLIP_MEAN : x->mean,
                                                         cl ? TS_CLIP_STD : x->std,
                                                         s->images + (size_t)r * p->img_floats);
    }
    s->labels[r] = sm->has_label ? sm->label : -1;
    s->sidx[r] = sm->index;
    memset(s->keys[r], 0, sizeof s->keys[r]); /* whole rows compare equal run to run */
    snprintf(s->keys[r], sizeof s->keys[r], "%.63s", sm->key);
    if (c->prepare) {
        ts_status st = c->prepare(c->prepare_user, sm, s->extra + (size_t)r * c->prepare_bytes, &e);
        if (st) {
            snprintf(msg, ROW_MSG, "%.300s: %.200s", sm->where, e.msg);
            return TS_BAD_PREPARE;
        }
    }
    return TS_BAD_NONE;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    ts_pipe *p = w->p;
    char msg[ROW_MSG];
    pthread_mutex_lock(&p->mu);
    slot *s;
    int r;
    while (reader_step(p, w, &s, &r)) {
        pthread_mutex_unlock(&p->mu);
        msg[0] = 0;
        int bad = process(p, w, w->sample, s, r, msg);
        pthread_mutex_lock(&p->mu);
        s->row_state[r] = bad ? ROW_BAD : ROW_GOOD;
        if (bad) {
            s->row_bad[r] = bad;
            s->sidx[r] = w->sample->index;
            memcpy(s->row_msg[r], msg, ROW_MSG);
            if (s->row_where) {
                snprintf(s->row_where[r], ROW_MSG, "%s", w->sample->where);
                snprintf(s->row_path[r], ROW_MSG, "%s",
                         w->sample->path.n ? (const char *)w->sample->path.data : "");
            }
        }
        s->done++;
        if (s->state == SLOT_CLOSED && s->done == s->assigned) pthread_cond_broadcast(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Opening and closing                                                                      */

/* A page-aligned batch buffer of n bytes, shown to the on_buffer hook; NULL when out of memory */
static void *buffer_alloc(const ts_pipe_cfg *c, size_t n) {
    void *b = page_alloc(n);
    if (b && c->on_buffer) c->on_buffer(c->on_buffer_user, b, n, 0);
    return b;
}

static void buffer_free(const ts_pipe_cfg *c, void *b, size_t n) {
    if (b && c->on_buffer) c->on_buffer(c->on_buffer_user, b, n, 1);
    free(b);
}

static void slot_free(ts_pipe *p, slot *s) {
    buffer_free(&p->cfg, s->images, (size_t)p->B * p->img_floats * sizeof(float));
    free(s->labels);
    buffer_free(&p->cfg, s->extra, (size_t)p->B * p->cfg.prepare_bytes);
    free(s->sidx);
    free(s->keys);
    free(s->row_state);
    free(s->row_bad);
    free(s->row_msg);
    free(s->row_where);
    free(s->row_path);
    free(s->src_msgs);
}

void ts_pipe_close(ts_pipe *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_slot);
    pthread_cond_broadcast(&p->cv_done);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->workers[i].thread, NULL);
    for (int i = 0; p->workers && i < p->cfg.workers; i++) {
        worker *w = &p->workers[i];
        if (w->sample) ts_sample_free(w->sample);
        free(w->sample);
        ts_image_u8_free(&w->im);
        ts_image_u8_free(&w->tmp);
        ts_image_u8_free(&w->out);
        free(w->frames);
    }
    for (int i = 0; p->buf && i < p->kbuf; i++) {
        ts_sample_free(p->buf[i]);
        free(p->buf[i]);
    }
    for (int i = 0; p->slots && i < p->nslots; i++) slot_free(p, &p->slots[i]);
    free(p->buf);
    free(p->workers);
    free(p->slots);
    ts_source_free(p->src);
    pthread_cond_destroy(&p->cv_slot);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static ts_sample *sample_new(void) {
    ts_sample *s = malloc(sizeof *s);
    if (s) {
        ts_sample_init(s);
        ts_sample_clear(s);
    }
    return s;
}

ts_status ts_pipe_open(ts_pipe **out, ts_source *src, const ts_pipe_cfg *cfg,
                       const ts_pipe_pos *start, ts_err *err) {
    *out = NULL;
    ts_pipe_cfg c = *cfg;
    if (c.world <= 0) c.world = 1;
    if (c.slots <= 0) c.slots = 4;
    const char *bad = NULL;
    if (c.batch_size < 1) bad = "batch_size must be at least 1";
    else if (c.workers < 1 || c.workers > 256) bad = "workers must be in 1..256";
    else if (c.rank < 0 || c.rank >= c.world) bad = "rank must be in 0..world-1";
    else if (c.xform.frames < 0 || c.xform.frames > 256)
        bad = "xform.frames must be 0..256";
    else if (c.xform.mode != TS_XFORM_NONE && (c.xform.size < 1 || c.xform.size > 8192))
        bad = "the transform's size must be in 1..8192";
    else if (c.prepare_bytes && !c.prepare) bad = "prepare_bytes without a prepare hook";
    else if (c.shuffle_buffer < 0 || c.shuffle_buffer > 1 << 20)
        bad = "shuffle_buffer must be in 0..1048576";
    else if (c.on_bad != TS_ON_BAD_SKIP && c.on_bad != TS_ON_BAD_FAIL) bad = "unknown on_bad";
    else if (start && (start->epoch < 0 || start->samples < 0)) bad = "negative start position";
    if (bad) {
        ts_source_free(src);
        return ts_fail(err, TS_ERR_USAGE, "data pipeline: %s", bad);
    }
#ifndef TS_HAVE_VIDEO
    if (c.xform.frames > 0) { /* refused here, not skipped sample by sample as corrupt */
        ts_source_free(src);
        return ts_fail(err, TS_ERR_UNSUPPORTED, "data pipeline: video clips (%d frames each), "
                       "but this build of tessera has no video decoding (FFmpeg's libraries "
                       "were not found when it was configured)", c.xform.frames);
    }
#endif
    ts_pipe *p = calloc(1, sizeof *p);
    if (!p) {
        ts_source_free(src);
        return ts_fail(err, TS_ERR_NOMEM, "data pipeline: out of memory");
    }
    p->cfg = c;
    p->src = src;
    p->B = c.batch_size;
    p->nslots = c.slots;
    p->held = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_slot, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    size_t S = c.xform.mode == TS_XFORM_NONE ? 0 : (size_t)c.xform.size;
    p->img_floats = 3 * S * S * (size_t)(c.xform.frames > 0 ? c.xform.frames : 1);
    size_t B = (size_t)p->B;
    p->slots = calloc((size_t)p->nslots, sizeof *p->slots);
    p->workers = calloc((size_t)c.workers, sizeof *p->workers);
    p->kbuf = c.shuffle_buffer > 1 ? c.shuffle_buffer : 0;
    p->buf = p->kbuf ? calloc((size_t)p->kbuf, sizeof *p->buf) : NULL;
    int ok = p->slots && p->workers && (!p->kbuf || p->buf);
    for (int i = 0; ok && i < p->nslots; i++) {
        slot *s = &p->slots[i];
        s->g = -1;
        s->images = S ? buffer_alloc(&c, B * p->img_floats * sizeof(float)) : NULL;
        s->labels = malloc(B * sizeof *s->labels);
        s->extra = c.prepare_bytes ? buffer_alloc(&c, B * c.prepare_bytes) : NULL;
        s->sidx = malloc(B * sizeof *s->sidx);
        s->keys = malloc(B * sizeof *s->keys);
        s->row_state = malloc(B);
        s->row_bad = malloc(B * sizeof *s->row_bad);
        s->row_msg = malloc(B * sizeof *s->row_msg);
        if (c.on_skip) {
            s->row_where = malloc(B * sizeof *s->row_where);
            s->row_path = malloc(B * sizeof *s->row_path);
        }
        ok = (!S || s->images) && s->labels && (!c.prepare_bytes || s->extra) && s->sidx &&
             s->keys && s->row_state && s->row_bad && s->row_msg &&
             (!c.on_skip || (s->row_where && s->row_path));
    }
    for (int i = 0; ok && i < p->kbuf; i++) ok = (p->buf[i] = sample_new()) != NULL;
    for (int i = 0; ok && i < c.workers; i++) {
        worker *w = &p->workers[i];
        w->p = p;
        ts_image_u8_init(&w->im);
        ts_image_u8_init(&w->tmp);
        ts_image_u8_init(&w->out);
        ok = (w->sample = sample_new()) != NULL;
    }
    if (!ok) {
        ts_pipe_close(p);
        return ts_fail(err, TS_ERR_NOMEM, "data pipeline: cannot allocate %d batch buffers of %d",
                       c.slots, c.batch_size);
    }
    if (start) {
        p->epoch = start->epoch;
        p->skip = start->samples;
        p->pos = *start;
    }
    if (c.epochs > 0 && p->epoch >= c.epochs) p->ended = 1;
    for (int i = 0; i < c.workers; i++) {
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i])) {
            ts_pipe_close(p);
            return ts_fail(err, TS_ERR_NOMEM, "data pipeline: cannot start worker thread %d", i);
        }
        p->nstarted++;
    }
    *out = p;
    return TS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* The consumer                                                                             */

static void log_bad(ts_pipe *p, int reason, const char *msg) {
    p->bad[reason]++;
    if (p->logged[reason] < LOG_PER_REASON)
        ts_log(TS_LOG_WARN, "data: skipped (%s): %s", ts_bad_reason_str(reason), msg);
    else if (p->logged[reason] == LOG_PER_REASON)
        ts_log(TS_LOG_WARN, "data: more samples skipped for '%s'; counted, no longer logged",
               ts_bad_reason_str(reason));
    p->logged[reason]++;
}

/* The on_skip hook for each bad row of s, then each shard skipped while it filled. */
static void tell_skipped(ts_pipe *p, slot *s) {
    for (int r = 0; r < s->last_row; r++) {
        if (s->row_state[r] != ROW_BAD) continue;
        ts_skipped k = { s->row_bad[r], s->epoch, s->sidx[r], s->row_where[r], s->row_path[r],
                         s->row_msg[r] };
        p->cfg.on_skip(p->cfg.on_skip_user, &k);
    }
    for (int64_t i = 0; i < s->src_bad; i++) {
        ts_skipped k = { TS_BAD_SHARD, s->epoch, -1, "", "",
                         i < s->src_cap ? s->src_msgs[i] : s->src_msg };
        p->cfg.on_skip(p->cfg.on_skip_user, &k);
    }
}

/* Move the good rows of s to the front, in order. Returns how many there are. */
static int compact(ts_pipe *p, slot *s) {
    size_t xb = p->cfg.prepare_bytes, fl = p->img_floats;
    int n = 0;
    for (int r = 0; r < s->last_row; r++) {
        if (s->row_state[r] != ROW_GOOD) continue;
        if (n != r) {
            if (fl) memcpy(s->images + (size_t)n * fl, s->images + (size_t)r * fl, fl * sizeof(float));
            if (xb) memcpy(s->extra + (size_t)n * xb, s->extra + (size_t)r * xb, xb);
            s->labels[n] = s->labels[r];
            s->sidx[n] = s->sidx[r];
            memcpy(s->keys[n], s->keys[r], sizeof s->keys[n]);
        }
        n++;
    }
    return n;
}

ts_status ts_pipe_next(ts_pipe *p, ts_pipe_batch *b, ts_err *err) {
    memset(b, 0, sizeof *b);
    pthread_mutex_lock(&p->mu);
    if (p->failed) {
        if (err) *err = p->fail_err;
        pthread_mutex_unlock(&p->mu);
        return p->fail_err.code;
    }
    if (p->held >= 0) {
        p->slots[p->held].state = SLOT_FREE;
        p->held = -1;
        pthread_cond_broadcast(&p->cv_slot);
    }
    for (;;) {
        int si = (int)(p->next_g % p->nslots);
        slot *s = &p->slots[si];
        if (s->g == p->next_g && s->state == SLOT_CLOSED && s->done == s->assigned) {
            /* Problems in stream order: the rows first, then a source error after them. */
            int first = -1;
            for (int r = 0; r < s->last_row && first < 0; r++)
                if (s->row_state[r] == ROW_BAD) first = r;
            if (p->cfg.on_bad == TS_ON_BAD_FAIL && (first >= 0 || s->has_err)) {
                if (first >= 0)
                    ts_fail(&p->fail_err, TS_ERR_DATA, "bad sample (%s): %s",
                            ts_bad_reason_str(s->row_bad[first]), s->row_msg[first]);
                else
                    p->fail_err = s->err;
                p->failed = 1;
                p->stop = 1;
                pthread_cond_broadcast(&p->cv_slot);
                if (err) *err = p->fail_err;
                pthread_mutex_unlock(&p->mu);
                return p->fail_err.code;
            }
            for (int r = 0; r < s->last_row; r++)
                if (s->row_state[r] == ROW_BAD) log_bad(p, s->row_bad[r], s->row_msg[r]);
            for (int64_t k = 0; k < s->src_bad; k++) log_bad(p, TS_BAD_SHARD, s->src_msg);
            if (p->cfg.on_skip) tell_skipped(p, s);
            int n = compact(p, s);
            p->pos = (ts_pipe_pos){ s->epoch, s->end_pos };
            p->next_g++;
            if (s->has_err) {
                /* A source error under the skip policy (no samples, out of memory, fewer
                 * shards than ranks): the rows read before it are delivered, then it stops. */
                p->fail_err = s->err;
                p->failed = 1;
                p->stop = 1;
                pthread_cond_broadcast(&p->cv_slot);
                if (!n || s->dropped) {
                    s->state = SLOT_FREE;
                    if (err) *err = p->fail_err;
                    pthread_mutex_unlock(&p->mu);
                    return p->fail_err.code;
                }
            } else if (!n || s->dropped) {
                s->state = SLOT_FREE;
                pthread_cond_broadcast(&p->cv_slot);
                continue;
            }
            s->state = SLOT_DELIVERED;
            p->held = si;
            b->n = n;
            b->epoch = s->epoch;
            b->index = s->index;
            b->images = s->images;
            b->labels = s->labels;
            b->extra = s->extra;
            b->sample_index = s->sidx;
            b->keys = s->keys;
            pthread_mutex_unlock(&p->mu);
            return TS_OK;
        }
        if (p->ended && p->next_g >= p->fill_g) {
            pthread_mutex_unlock(&p->mu);
            return TS_OK; /* b->n = 0: the end */
        }
        pthread_cond_wait(&p->cv_done, &p->mu);
    }
}

ts_pipe_pos ts_pipe_position(const ts_pipe *p) {
    pthread_mutex_lock((pthread_mutex_t *)&p->mu);
    ts_pipe_pos pos = p->pos;
    pthread_mutex_unlock((pthread_mutex_t *)&p->mu);
    return pos;
}

void ts_pipe_bad_counts(const ts_pipe *p, int64_t counts[TS_BAD_COUNT]) {
    pthread_mutex_lock((pthread_mutex_t *)&p->mu);
    memcpy(counts, p->bad, sizeof p->bad);
    pthread_mutex_unlock((pthread_mutex_t *)&p->mu);
}
