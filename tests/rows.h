/* rows.h: the one table of op test cases, shared by the gradient check and the PyTorch parity
 * test.
 *
 * A row names a case, the op it exercises, how to make small random inputs for the gradient
 * check (make), and how to compute the output from inputs (fn). When parity is set, the Python
 * reference (tests/parity/reference.py) has a case of the same name that writes the inputs,
 * PyTorch's output and PyTorch's input gradients for an upstream gradient dy; the parity test
 * feeds the same inputs to fn and compares. Rows live in tests/rows/rows_*.c, one file per
 * group of ops; tests/rows/all.c joins them. An op of TS_OP_LIST without a row fails the
 * gradient check's coverage test.
 */
#ifndef TS_TEST_ROWS_H
#define TS_TEST_ROWS_H

#include "tessera.h"

#define ROW_MAX_IN 16

typedef struct test_row {
    const char *name;
    int op;  /* a ts_op, or -1 for module rows (nn blocks) that only have parity */
    /* Gradient-check inputs: fill in[], set requires_grad on the ones to differentiate, return
     * their count. NULL when the row is parity-only. */
    int (*make)(ts_ctx *c, ts_rng *r, ts_tensor **in);
    ts_tensor *(*fn)(ts_ctx *c, ts_tensor **in);
    double tol;  /* gradient-check tolerance (relative and absolute), 0 = default 1e-2 */
    int parity;  /* the Python reference has this case */
} test_row;

extern const test_row *const ts_test_rows[];
extern const int ts_test_nrows;

/* Helpers for make(): a random f32 tensor N(0, scale^2) (requires_grad as asked), and random
 * i32 ids in [0, hi). */
ts_tensor *row_randn(ts_ctx *c, ts_rng *r, int ndim, const int64_t *shape, float scale, int rg);
ts_tensor *row_randint(ts_ctx *c, ts_rng *r, int ndim, const int64_t *shape, int hi);

#define ROW_END { NULL, 0, NULL, NULL, 0, 0 }

#endif
