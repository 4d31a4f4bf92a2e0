/* action.h: the "A" of vision-language-action models.
 *
 * Normalisation of actions and proprioception, action tokenizers (uniform bins as RT-2 and
 * OpenVLA; FAST: DCT over the chunk, rounding, BPE), a pose tokenizer for skeleton sequences,
 * the diffusion noise schedule and samplers of Diffusion Policy (DDPM training with
 * squaredcos_cap_v2, DDIM sampling), the action heads (diffusion, discrete tokens, L1
 * regression) that turn observation tokens into a chunk of actions, and the built-in simulated
 * tasks used for closed-loop evaluation (reach2d).
 *
 * action/ includes core/tessera.h only; the command line wires it to loaders/ (HDF5 windows)
 * and to the encoders of vision/ and text/.
 */
#ifndef TS_ACTION_H
#define TS_ACTION_H

#include "tessera.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* Normalisation (action/normalize.c)                                                        */

/* Per-dimension affine maps to a normalised range, fitted once on a dataset:
 *   minmax:   [min, max] -> [-1, 1] (Diffusion Policy's LinearNormalizer "limits" mode)
 *   meanstd:  (x - mean) / std
 *   quantile: [q01, q99] -> [-1, 1], then clipped to [-1, 1] (OpenVLA's BOUNDS_Q99)
 *   none:     identity
 * A dimension whose range (or std) is below 1e-8 maps to 0 and inverts to its centre (min,
 * mean or q01), so constant dimensions never divide by zero. The state is two float vectors
 * (scale and offset, x_norm = x * scale + offset) so that a model stores it in its checkpoint
 * as two buffers. */
typedef enum { TS_NORM_NONE, TS_NORM_MINMAX, TS_NORM_MEANSTD, TS_NORM_QUANTILE } ts_norm_kind;
#define TS_NORM_KIND_NAMES { "none", "minmax", "meanstd", "quantile", NULL }

typedef struct ts_normalizer {
    ts_norm_kind kind;
    int dim;
    float *scale, *offset; /* (dim) each, owned (ts_norm_free) */
    int clip;              /* quantile: clip normalised values to [-1, 1] */
} ts_normalizer;

/* Fit on rows x (n, dim), row-major. Quantiles as numpy's default (linear interpolation). */
void ts_norm_fit(ts_normalizer *nz, ts_norm_kind kind, const float *x, int64_t n, int dim);
void ts_norm_free(ts_normalizer *nz);
void ts_norm_apply(const ts_normalizer *nz, float *x, int64_t n);  /* in place, (n, dim) */
void ts_norm_invert(const ts_normalizer *nz, float *x, int64_t n); /* in place, (n, dim) */

/* ---------------------------------------------------------------------------------------- */
/* Action tokenizers (action/tokenize_bins.c, action/tokenize_fast.c)                       */

/* A tokenizer of normalised action chunks (H, A) into integer ids and back. Ids are in
 * [0, vocab); a model places them in its own id range (OpenVLA: the last 256 ids). */
typedef struct ts_act_tok ts_act_tok;
struct ts_act_tok {
    const char *type; /* "bins", "fast" */
    int horizon, dim; /* H, A */
    int vocab;        /* ids are in [0, vocab) */
    int max_len;      /* the longest id sequence of one chunk */
    /* chunk (H * A) row-major -> ids; returns the number of ids written (<= max_len). */
    int (*encode)(const ts_act_tok *t, const float *chunk, int32_t *ids);
    /* ids (n) -> chunk (H * A); TS_ERR_DATA for a sequence that does not decode (an id out of
     * range, a FAST sequence of the wrong length: the message says which). */
    ts_status (*decode)(const ts_act_tok *t, const int32_t *ids, int n, float *chunk, ts_err *err);
    void (*free)(ts_act_tok *t);
    void *impl;
};
void ts_act_tok_free(ts_act_tok *t); /* NULL is a no-op */

/* Uniform bins: bins equal cells over [-1, 1] per value (values outside are clipped), the id
 * of value j of the chunk is its cell; decode gives the cell centre, so the round-trip error is
 * at most half a cell (1 / bins) inside [-1, 1]. One id per value: max_len = H * A. */
ts_act_tok *ts_act_tok_bins_new(int horizon, int dim, int bins);

/* FAST (Pertsch et al. 2025): a DCT-II (orthonormal, scipy's norm="ortho") of each action
 * dimension over the chunk's H steps, coefficients scaled by scale and rounded to integers,
 * flattened frequency-major (all dimensions' coefficient 0, then coefficient 1, ...), then
 * BPE over the integer sequence. The BPE is trained on the dataset's chunks: the base symbols
 * are the integers in [min, max] seen in training (others are clipped to that range), merges
 * are learnt greedily by pair frequency until vocab ids exist. Decoding inverts the BPE
 * exactly, then the inverse DCT; the only loss is the rounding (at most 0.5 / scale per
 * coefficient). */
typedef struct ts_fast_cfg {
    float scale;   /* 10, as FAST's default */
    int vocab;     /* 1024 */
    int min_freq;  /* a pair seen fewer times is not merged (2) */
} ts_fast_cfg;
ts_fast_cfg ts_fast_cfg_default(void);
/* Train on n chunks (n, H, A) of normalised actions. */
ts_status ts_act_tok_fast_train(ts_act_tok **out, const float *chunks, int64_t n, int horizon,
                                int dim, const ts_fast_cfg *cfg, ts_err *err);
/* The trained tokenizer as text (a small self-describing format: header, then the merges),
 * and back; a checkpoint keeps it beside the weights. */
char *ts_act_tok_fast_save(const ts_act_tok *t); /* malloc'ed */
ts_status ts_act_tok_fast_load(ts_act_tok **out, const char *text, const char *name,
                               ts_err *err);

/* ---------------------------------------------------------------------------------------- */
/* Poses (action/pose.c)                                                                     */

/* Skeleton sequences: T frames of K keypoints of d = 2 or 3 coordinates, (T, K, d). Normalised
 * per frame: the root keypoint is subtracted, then the frame is divided by the largest
 * keypoint distance from the root (1 when all coincide), so values lie in [-1, 1]. The
 * tokenizer bins each normalised coordinate as ts_act_tok_bins does; decode gives the
 * normalised pose (the root and scale are returned by ts_pose_normalize for the caller). */
void ts_pose_normalize(const float *pose, int T, int K, int d, int root, float *out,
                       float *root_xyz /* (T, d) or NULL */, float *scale /* (T) or NULL */);
void ts_pose_tokenize(const float *norm, int64_t n, int bins, int32_t *ids);
void ts_pose_detokenize(const int32_t *ids, int64_t n, int bins, float *norm);

/* The continuous alternative: a linear patch embedding over time. Frames are grouped in
 * patches of p consecutive frames; each patch (p * K * d values) is one token:
 * tokens = linear(patches) + pos, parameters PREFIX.proj.weight (width, p*K*d),
 * PREFIX.proj.bias, PREFIX.pos_embed (max_patches, width). */
typedef struct ts_pose_embed {
    ts_nn_linear proj;
    ts_tensor *pos;
    int patch, keypoints, coords, width, max_patches;
} ts_pose_embed;
void ts_pose_embed_init(ts_pose_embed *m, ts_params *p, const char *prefix, int patch,
                        int keypoints, int coords, int width, int max_patches);
/* x (B, T, K, d) normalised poses, T a multiple of patch -> tokens (B, T / patch, width). */
ts_tensor *ts_pose_embed_forward(ts_ctx *c, const ts_pose_embed *m, const ts_tensor *x);

/* ---------------------------------------------------------------------------------------- */
/* Diffusion (action/diffusion.c), as diffusers' DDPMScheduler and DDIMScheduler compute it  */

typedef enum { TS_PRED_EPSILON, TS_PRED_SAMPLE } ts_pred_kind;

typedef struct ts_diffusion {
    int train_steps;        /* N (100) */
    int prediction;         /* ts_pred_kind */
    int clip_sample;        /* clip the predicted x0 to [-clip_range, clip_range] (true) */
    float clip_range;       /* 1 */
    double *betas, *alphas_cumprod; /* (N) each, owned */
} ts_diffusion;

/* squaredcos_cap_v2: betas_t = min(1 - abar((t+1)/N) / abar(t/N), 0.999) with
 * abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2; alphas_cumprod = cumprod(1 - betas),
 * computed in double as diffusers does (it then stores float32). */
void ts_diffusion_init(ts_diffusion *d, int train_steps, ts_pred_kind prediction,
                       int clip_sample);
void ts_diffusion_free(ts_diffusion *d);
/* x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per sample t[i]; x0, eps, out (n, m). */
void ts_diffusion_add_noise(const ts_diffusion *d, const float *x0, const float *eps,
                            const int32_t *t, int64_t n, int64_t m, float *out);
/* The DDIM timesteps for k inference steps (diffusers' "leading" spacing, steps_offset 0):
 * ts[i] = (N / k) * (k - 1 - i). Writes k values. */
void ts_diffusion_ddim_timesteps(const ts_diffusion *d, int k, int32_t *ts);
/* One DDIM step (eta 0, set_alpha_to_one true) from timestep t to t - N/k: model_out (the
 * predicted epsilon or sample), x (n*m) updated in place. */
void ts_diffusion_ddim_step(const ts_diffusion *d, int k, int t, const float *model_out,
                            float *x, int64_t nm);
/* One DDPM step (variance "fixed_small", as Diffusion Policy) from t to t - 1, with noise
 * drawn from rng when t > 0 (rng NULL: the posterior mean alone, no noise added). */
void ts_diffusion_ddpm_step(const ts_diffusion *d, int t, const float *model_out, float *x,
                            int64_t nm, ts_rng *rng);

/* ---------------------------------------------------------------------------------------- */
/* Action heads (action/heads.c)                                                             */

/* An action head predicts a chunk of H normalised actions of A dimensions from observation
 * tokens cond (n, Tc, cond_dim), projected to the head's width W as the memory of pre-norm
 * decoder blocks laid out as torch.nn.TransformerDecoderLayer(norm_first=True) (self-attention,
 * cross-attention to the memory, MLP with GELU) in a TransformerDecoder with a final norm.
 * Three kinds:
 *   l1:        H learned queries through the blocks, a linear readout to A per step, L1 loss
 *              (ACT's regression head).
 *   diffusion: the same readout of learned queries gives an observation context (H tokens, one
 *              per step, computed once per prediction); a second stack of blocks (the
 *              denoiser) runs over input_proj(x_t) + context + a learned position embedding +
 *              the timestep embedding (Diffusion Policy's SinusoidalPosEmb, then
 *              Linear-Mish-Linear), with [timestep token, context] as its memory, and predicts
 *              epsilon or the clean chunk. Trained with DDPM noise at a uniformly drawn
 *              timestep and MSE; predict() runs DDIM. Adding the context to every noised token
 *              (rather than only offering the observation to cross-attention from queries made
 *              of noise) is what lets the denoiser learn to use the observation quickly.
 *   tokens:    autoregressive over an action tokenizer's ids (bins or FAST) with a BOS id and,
 *              for variable-length tokenizers, an EOS id: the blocks with a causal
 *              self-attention, cross-entropy on the next id; predict() decodes greedily.
 * A mask (n, A) of 1/0 (or NULL: all 1) marks the action dimensions a sample has, for a
 * mixture of datasets of different action dimension padded to A (Octo): padded dimensions are
 * left out of the loss (diffusion, l1) or fixed to the middle bin (tokens: bins only).
 * Parameter names under PREFIX (the recipe's "head"). */
typedef enum { TS_HEAD_DIFFUSION, TS_HEAD_TOKENS, TS_HEAD_L1 } ts_head_kind;
#define TS_HEAD_KIND_NAMES { "diffusion", "tokens", "l1", NULL }

typedef struct ts_head_cfg {
    int kind;               /* ts_head_kind */
    int horizon, action_dim, cond_dim;
    int width, depth, heads;
    float mlp_ratio, dropout;
    /* diffusion */
    int train_steps, infer_steps; /* 100, 10 (DDIM) */
    int noise_samples;            /* noised copies of each chunk per batch (1): more noise
                                   * draws per observation for the cost of the head alone */
    int prediction;               /* ts_pred_kind */
    /* tokens: the tokenizer (borrowed; the caller frees it after the head) */
    const ts_act_tok *tok;
} ts_head_cfg;

typedef struct ts_action_head ts_action_head;
ts_action_head *ts_action_head_new(ts_params *p, const char *prefix, const ts_head_cfg *cfg);
void ts_action_head_free(ts_action_head *h); /* NULL is a no-op */
/* Training loss (1) of a batch: cond (n, Tc, cond_dim) observation tokens (with grad),
 * actions (n, H, A) normalised targets, mask NULL or (n, A). Random draws (timesteps, noise)
 * come from c->rng. Adds the head's metrics to m (may be NULL). */
ts_tensor *ts_action_head_loss(ts_ctx *c, ts_action_head *h, const ts_tensor *cond,
                               const ts_tensor *actions, const ts_tensor *mask, ts_metrics *m);
/* Inference (call with grad disabled): out (n, H, A) normalised actions. seed makes the
 * diffusion noise (the same seed, the same actions). A token sequence that does not decode
 * gives the zero chunk (the middle of the range) for that sample and counts in *bad (may be
 * NULL). */
void ts_action_head_predict(ts_ctx *c, ts_action_head *h, const ts_tensor *cond, uint64_t seed,
                            float *out, int64_t *bad);
/* The network alone, for tests and tools: diffusion: x = x_t (n, H, A) with timesteps (n) ->
 * the model output (n, H, A); tokens: x = ids i32 (n, T), T <= max_len + 1, the first BOS
 * (= vocab) -> logits (n, T, vocab + 2) (EOS = vocab + 1); l1: x NULL -> the chunk (n, H, A). */
ts_tensor *ts_action_head_forward(ts_ctx *c, ts_action_head *h, const ts_tensor *cond,
                                  const ts_tensor *x, const int32_t *timesteps);
/* The head as an objective for the factory: loss() reads e->tokens as cond and
 * e->batch->actions, e->batch->action_mask. The objective borrows h. */
ts_objective *ts_objective_action_new(ts_action_head *h, float weight);

/* ---------------------------------------------------------------------------------------- */
/* Observation encoders (action/obs.c)                                                       */
/* ---------------------------------------------------------------------------------------- */

/* FiLM (Perez et al. 2018), as RT-1 conditions its image features on the instruction:
 * x (n, M, W), e (n, E), lin a Linear(E, 2W) whose output splits into (gamma, beta):
 * x * (1 + gamma) + beta over the M tokens of each sample -> (n, M, W). */
ts_tensor *ts_film(ts_ctx *c, const ts_nn_linear *lin, const ts_tensor *x, const ts_tensor *e);

/* Spatial-softmax keypoints as robomimic's SpatialSoftmax computes them on a feature map: the
 * tokens of a gh x gw grid (row-major, tokens (n, gh * gw, W)) through lin, a Linear(W, K)
 * (its 1x1 convolution), a softmax over the grid per keypoint, and the expected position under
 * it with x = linspace(-1, 1, gw) along a row and y = linspace(-1, 1, gh) down the columns:
 * (n, K, 2) as (x, y). */
ts_tensor *ts_spatial_softmax(ts_ctx *c, const ts_nn_linear *lin, const ts_tensor *tokens,
                              int gh, int gw);

/* ---------------------------------------------------------------------------------------- */
/* Simulated tasks for closed-loop evaluation (action/reach2d.c)                             */

/* reach2d: a point mass on the unit square among n_targets discs of distinct colours; the
 * instruction names one ("reach the red target"); the episode succeeds when the mass comes
 * within success_radius of that target's centre before max_steps. The action is a 2-d
 * velocity command in [-1, 1]^2 (clipped); the state (position, velocity) follows point-mass
 * dynamics with damping. Observations: an RGB image (size x size, uint8 HWC, rendered in C)
 * and the proprioception (x, y, vx, vy). Everything is a function of the episode seed. */
typedef struct ts_reach2d_cfg {
    int size;              /* image side (64) */
    int n_targets;         /* 3 (1 .. ts_reach2d_palette_size()) */
    int max_steps;         /* 80 */
    float success_radius;  /* 0.06 */
    float dt, max_speed, damping; /* 0.1, 0.22, 0.5: an expert episode takes
                                     * 17-46 steps, 27 on average */
} ts_reach2d_cfg;
ts_reach2d_cfg ts_reach2d_cfg_default(void);

#define TS_REACH2D_PROPRIO 4
typedef struct ts_reach2d ts_reach2d;
ts_reach2d *ts_reach2d_new(const ts_reach2d_cfg *cfg);
void ts_reach2d_free(ts_reach2d *e);
void ts_reach2d_reset(ts_reach2d *e, uint64_t episode_seed);
const char *ts_reach2d_instruction(const ts_reach2d *e);
void ts_reach2d_render(const ts_reach2d *e, uint8_t *rgb /* size * size * 3 */);
void ts_reach2d_proprio(const ts_reach2d *e, float *out /* TS_REACH2D_PROPRIO */);
/* Apply action (2); returns 1 when the episode ended (success or max_steps). */
int ts_reach2d_step(ts_reach2d *e, const float *action);
int ts_reach2d_success(const ts_reach2d *e);
/* The current episode's targets, for tests and visualisation: target k (0 <= k < n_targets)
 * has its centre xy in the unit square (x along the image columns, y down its rows), a colour
 * name ("red") and its RGB; any output may be NULL. ts_reach2d_goal is the index of the target
 * the instruction names. The palette has ts_reach2d_palette_size() colours, the most targets
 * an episode may have. */
void ts_reach2d_target(const ts_reach2d *e, int k, float xy[2], const char **colour,
                       uint8_t rgb[3]);
int ts_reach2d_goal(const ts_reach2d *e);
int ts_reach2d_palette_size(void);
int ts_reach2d_steps(const ts_reach2d *e);
/* The scripted expert's action for the current state (a saturated proportional controller
 * toward the named target with a little seeded noise, so demonstrations vary). */
void ts_reach2d_expert(ts_reach2d *e, float *action /* 2 */);

#ifdef __cplusplus
}
#endif
#endif /* TS_ACTION_H */
