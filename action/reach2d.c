/* reach2d.c: a point mass that must reach the target its instruction names.
 *
 * The world is the unit square, x to the right along the image columns and y downwards along
 * its rows. An episode (a function of its seed alone) places n_targets discs of distinct
 * colours drawn from a palette, away from the walls and from each other, and the mass at a
 * start position away from every target; the instruction names one target by its colour in one
 * of a few phrasings. The action is a velocity command in [-1, 1]^2 (clipped; NaN counts as 0)
 * that the mass follows with first-order lag:
 *   v <- damping * v + (1 - damping) * max_speed * a,   p <- clamp(p + dt * v, 0, 1)
 * (a wall also stops the velocity component that points into it). The episode succeeds when
 * |p - goal| < success_radius and ends then or after max_steps steps.
 *
 * Rendering is plain C: a light grey background, the targets as filled discs of their colour
 * and the mass as a smaller black disc on top, with edges antialiased by 4 x 4 supersampling,
 * so the image is the same on every machine. The scripted expert is a saturated proportional
 * controller toward the goal with a little Gaussian noise from its own seeded stream.
 *
 * What it is not: a physics engine (no collisions with the targets) or a renderer of anything
 * but discs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"

#define MAX_TARGETS 8
#define TARGET_RADIUS 0.07f  /* drawn radius of a target disc */
#define AGENT_RADIUS 0.035f  /* drawn radius of the mass */
#define WALL_MARGIN 0.15f    /* target centres lie in [margin, 1 - margin] */
#define TARGET_SPACING 0.22f /* least distance between two target centres */
#define START_CLEARANCE 0.4f /* least distance from the start to any target centre */
#define EXPERT_GAIN 4.0f     /* desired speed per unit of distance, before saturation */
#define EXPERT_NOISE 0.1f    /* std of the expert's action noise */

static const struct {
    const char *name;
    uint8_t rgb[3];
} palette[MAX_TARGETS] = {
    { "red", { 220, 40, 40 } },     { "green", { 40, 170, 60 } },
    { "blue", { 40, 80, 220 } },    { "yellow", { 235, 200, 30 } },
    { "purple", { 140, 60, 180 } }, { "orange", { 245, 130, 30 } },
    { "cyan", { 30, 190, 200 } },   { "pink", { 240, 120, 190 } },
};
static const uint8_t background[3] = { 210, 210, 210 };
static const uint8_t agent_rgb[3] = { 0, 0, 0 };

static const char *const phrasings[] = { "reach the %s target", "go to the %s target",
                                         "move to the %s target", "touch the %s target" };
#define N_PHRASINGS ((int)(sizeof phrasings / sizeof phrasings[0]))

struct ts_reach2d {
    ts_reach2d_cfg cfg;
    float target[MAX_TARGETS][2]; /* centres */
    int colour[MAX_TARGETS];      /* palette index of each target */
    int goal;                     /* index of the named target */
    float p[2], v[2];
    int steps, success, done;
    ts_rng noise; /* the expert's noise stream */
    char instruction[64];
};

ts_reach2d_cfg ts_reach2d_cfg_default(void) {
    return (ts_reach2d_cfg){ .size = 64,
                             .n_targets = 3,
                             .max_steps = 80,
                             .success_radius = 0.06f,
                             .dt = 0.1f,
                             .max_speed = 0.22f,
                             .damping = 0.5f };
}

ts_reach2d *ts_reach2d_new(const ts_reach2d_cfg *cfg) {
    TS_CHECK(cfg->size >= 8 && cfg->size <= 4096, "reach2d: image size %d", cfg->size);
    TS_CHECK(cfg->n_targets >= 1 && cfg->n_targets <= MAX_TARGETS,
             "reach2d: %d targets (1..%d)", cfg->n_targets, MAX_TARGETS);
    TS_CHECK(cfg->max_steps >= 1 && cfg->success_radius > 0 && cfg->dt > 0 &&
                 cfg->max_speed > 0 && cfg->damping >= 0 && cfg->damping < 1,
             "reach2d: max_steps %d, success_radius %g, dt %g, max_speed %g, damping %g",
             cfg->max_steps, cfg->success_radius, cfg->dt, cfg->max_speed, cfg->damping);
    ts_reach2d *e = calloc(1, sizeof *e);
    TS_CHECK(e, "reach2d: out of memory");
    e->cfg = *cfg;
    ts_reach2d_reset(e, 0);
    return e;
}

void ts_reach2d_free(ts_reach2d *e) { free(e); }

static float dist2(const float *a, const float *b) {
    float dx = a[0] - b[0], dy = a[1] - b[1];
    return dx * dx + dy * dy;
}

/* Place the targets and the start by rejection sampling; a layout that cannot be completed
 * after many draws starts over with the spacing relaxed a little (many targets on a small
 * square), so reset always finishes. */
static void place(ts_reach2d *e, ts_rng *r) {
    int n = e->cfg.n_targets;
    float spacing = TARGET_SPACING, clearance = START_CLEARANCE;
    for (;;) {
        for (int attempt = 0; attempt < 50; attempt++) {
            int k = 0, tries = 0;
            while (k < n && tries < 1000) {
                tries++;
                float *c = e->target[k];
                c[0] = WALL_MARGIN + (1 - 2 * WALL_MARGIN) * ts_rng_uniform(r);
                c[1] = WALL_MARGIN + (1 - 2 * WALL_MARGIN) * ts_rng_uniform(r);
                int ok = 1;
                for (int j = 0; j < k && ok; j++) ok = dist2(c, e->target[j]) >= spacing * spacing;
                if (ok) k++;
            }
            if (k < n) continue;
            for (tries = 0; tries < 1000; tries++) {
                e->p[0] = 0.05f + 0.9f * ts_rng_uniform(r);
                e->p[1] = 0.05f + 0.9f * ts_rng_uniform(r);
                int ok = 1;
                for (int j = 0; j < n && ok; j++)
                    ok = dist2(e->p, e->target[j]) >= clearance * clearance;
                if (ok) return;
            }
        }
        spacing *= 0.9f;
        clearance *= 0.9f;
    }
}

void ts_reach2d_reset(ts_reach2d *e, uint64_t episode_seed) {
    ts_rng r;
    ts_rng_seed(&r, episode_seed);
    int perm[MAX_TARGETS];
    for (int i = 0; i < MAX_TARGETS; i++) perm[i] = i;
    for (int i = 0; i < e->cfg.n_targets; i++) { /* partial Fisher-Yates: distinct colours */
        int j = i + (int)(ts_rng_next(&r) % (uint64_t)(MAX_TARGETS - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        e->colour[i] = perm[i];
    }
    e->goal = (int)(ts_rng_next(&r) % (uint64_t)e->cfg.n_targets);
    int phrase = (int)(ts_rng_next(&r) % N_PHRASINGS);
    place(e, &r);
    e->v[0] = e->v[1] = 0;
    e->steps = e->success = e->done = 0;
    snprintf(e->instruction, sizeof e->instruction, phrasings[phrase],
             palette[e->colour[e->goal]].name);
    ts_rng_seed(&e->noise, episode_seed ^ 0x5eed0f5eedc0ffeeULL);
}

const char *ts_reach2d_instruction(const ts_reach2d *e) { return e->instruction; }

int ts_reach2d_goal(const ts_reach2d *e) { return e->goal; }

void ts_reach2d_target(const ts_reach2d *e, int k, float xy[2], const char **colour,
                       uint8_t rgb[3]) {
    TS_CHECK(k >= 0 && k < e->cfg.n_targets, "reach2d: target %d of %d", k, e->cfg.n_targets);
    if (xy) xy[0] = e->target[k][0], xy[1] = e->target[k][1];
    if (colour) *colour = palette[e->colour[k]].name;
    if (rgb) memcpy(rgb, palette[e->colour[k]].rgb, 3);
}

int ts_reach2d_palette_size(void) { return MAX_TARGETS; }

/* Blend a disc of centre c and radius rad (unit square) into the image: each pixel takes the
 * fraction of its 4 x 4 subsamples that fall inside the disc. */
static void draw_disc(uint8_t *rgb, int size, const float *c, float rad, const uint8_t col[3]) {
    float s = (float)size;
    int x0 = (int)floorf((c[0] - rad) * s), x1 = (int)ceilf((c[0] + rad) * s);
    int y0 = (int)floorf((c[1] - rad) * s), y1 = (int)ceilf((c[1] + rad) * s);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > size - 1) x1 = size - 1;
    if (y1 > size - 1) y1 = size - 1;
    float r2 = rad * rad;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            int in = 0;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++) {
                    float px = ((float)x + (sx + 0.5f) / 4) / s - c[0];
                    float py = ((float)y + (sy + 0.5f) / 4) / s - c[1];
                    in += px * px + py * py < r2;
                }
            if (!in) continue;
            uint8_t *o = rgb + ((size_t)y * size + x) * 3;
            for (int ch = 0; ch < 3; ch++)
                o[ch] = (uint8_t)((o[ch] * (16 - in) + col[ch] * in + 8) / 16);
        }
}

void ts_reach2d_render(const ts_reach2d *e, uint8_t *rgb) {
    int size = e->cfg.size;
    for (size_t i = 0; i < (size_t)size * size; i++) memcpy(rgb + 3 * i, background, 3);
    for (int k = 0; k < e->cfg.n_targets; k++)
        draw_disc(rgb, size, e->target[k], TARGET_RADIUS, palette[e->colour[k]].rgb);
    draw_disc(rgb, size, e->p, AGENT_RADIUS, agent_rgb);
}

void ts_reach2d_proprio(const ts_reach2d *e, float *out) {
    out[0] = e->p[0];
    out[1] = e->p[1];
    out[2] = e->v[0];
    out[3] = e->v[1];
}

int ts_reach2d_step(ts_reach2d *e, const float *action) {
    if (e->done) return 1;
    const ts_reach2d_cfg *c = &e->cfg;
    for (int i = 0; i < 2; i++) {
        float a = action[i];
        a = a != a ? 0 : a < -1 ? -1 : a > 1 ? 1 : a;
        e->v[i] = c->damping * e->v[i] + (1 - c->damping) * c->max_speed * a;
        e->p[i] += c->dt * e->v[i];
        if (e->p[i] < 0) e->p[i] = 0, e->v[i] = e->v[i] < 0 ? 0 : e->v[i];
        if (e->p[i] > 1) e->p[i] = 1, e->v[i] = e->v[i] > 0 ? 0 : e->v[i];
    }
    e->steps++;
    if (dist2(e->p, e->target[e->goal]) < c->success_radius * c->success_radius)
        e->success = 1;
    e->done = e->success || e->steps >= c->max_steps;
    return e->done;
}

int ts_reach2d_success(const ts_reach2d *e) { return e->success; }
int ts_reach2d_steps(const ts_reach2d *e) { return e->steps; }

void ts_reach2d_expert(ts_reach2d *e, float *action) {
    /* Desired velocity gain * (goal - p), as a command of norm at most 1 (saturated), plus
     * noise, clipped to [-1, 1] per dimension. */
    const float *g = e->target[e->goal];
    float u[2] = { EXPERT_GAIN * (g[0] - e->p[0]) / e->cfg.max_speed,
                   EXPERT_GAIN * (g[1] - e->p[1]) / e->cfg.max_speed };
    float n = sqrtf(u[0] * u[0] + u[1] * u[1]);
    if (n > 1) u[0] /= n, u[1] /= n;
    for (int i = 0; i < 2; i++) {
        float a = u[i] + EXPERT_NOISE * ts_rng_normal(&e->noise);
        action[i] = a < -1 ? -1 : a > 1 ? 1 : a;
    }
}
