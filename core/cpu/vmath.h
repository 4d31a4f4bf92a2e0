/* vmath.h: branch-free float exp, normal CDF and GELU slope that GCC vectorises, for the CPU
 * kernels (GELU, attention, stripe attention); internal to core/cpu.
 */
#ifndef TS_CPU_VMATH_H
#define TS_CPU_VMATH_H

#include <math.h>
#include <stdint.h>

#define GELU_RSQRT2 0.70710678118654752f
#define GELU_RSQRT2PI 0.39894228040143268f

/* With Phi the standard normal CDF and phi its density, GELU is y = z * Phi(z) and its slope
 * Phi(z) + z * phi(z).
 *
 * libm's erff and expf are scalar calls, and they were most of this op's time, so both are
 * written here as branch-free float code that GCC vectorises (AVX-512 with -march=native):
 *
 *   exp(x) = 2^n exp(r), x = n ln2 + r, |r| <= ln2/2: Cephes' polynomial (relative error below
 *   1e-7), 2^n put into the exponent bits; the argument is clamped to [-87, 88].
 *   Phi(z) = erfc(-z / sqrt 2) / 2, and erfc(u) for u >= 0 by the Chebyshev fit of Numerical
 *   Recipes (erfcc: relative error below 1.2e-7 for every u >= 0), so Phi keeps its relative
 *   accuracy far into the negative tail where z * Phi(z) is tiny; Phi(z) = 1 - erfc(u) / 2 for
 *   z >= 0. */
static inline float vexp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)n + 127) << 23;
    return p * u.f;
}

/* exp(x) for x <= 0 (and -inf), for softmax numerators: vexp, and 0 below -87, which is what a
 * probability that small is in float32 anyway. */
static inline float exp_neg(float x) { return x <= -87.0f ? 0.0f : vexp(x); }

/* Phi(z), the standard normal CDF. */
static inline float vphi(float z) {
    float u = fabsf(z) * GELU_RSQRT2;
    float t = 1.0f / (1.0f + 0.5f * u);
    float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
                 t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
                 t * (-0.82215223f + t * 0.17087277f))))))));
    float half_erfc = 0.5f * t * vexp(poly - u * u); /* erfc(u) / 2 = Phi(-|z|) */
    return z >= 0.0f ? 1.0f - half_erfc : half_erfc;
}

/* GELU's derivative at z: Phi(z) + z phi(z). */
static inline float dgelu(float z) {
    return vphi(z) + z * GELU_RSQRT2PI * vexp(-0.5f * z * z);
}

#endif
