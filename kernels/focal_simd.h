// CPU vector math and the per-range driver of the fused focal loss.
//
// Framework-free: GCC/Clang vector extensions only, so one source serves
// SSE2, AVX2 and AVX-512 (the width is FF_VEC_WIDTH floats; the instruction
// set is whatever -m flags the including translation unit is compiled with).
// No libm call is made: exp, log1p and log are the Cephes single-precision
// polynomials (S. L. Moshier, Cephes Math Library, expf.c / logf.c), with
// these error bounds, measured against float64 over the argument ranges used
// here (see kernels/README.md; exhaustive over all float32 inputs):
//
//   exp(x),   x in [-104, 0]:  <= 2 ulp (result rounded to float32; results
//                               below 2^-126 are subnormal, exact to 2^-149)
//   log1p(t), t in [0, 1]:     <= 2 ulp (no rounding of 1 + t: the argument
//                               is reduced exactly as t or (t - 1)/2)
//   log(d),   d in [FLT_MIN, 1]: <= 2 ulp
//
// float16 / bfloat16 are converted with integer bit operations (exact, round
// to nearest even on the way out, NaN and Inf kept).
#ifndef FUSEDFOCAL_KERNELS_FOCAL_SIMD_H_
#define FUSEDFOCAL_KERNELS_FOCAL_SIMD_H_

#include <stdint.h>
#include <string.h>

#include "focal_cpu.h"
#include "focal_math.h"

#ifndef FF_VEC_WIDTH
#define FF_VEC_WIDTH 8
#endif

namespace fusedfocal {
namespace {

constexpr int W = FF_VEC_WIDTH;
typedef float VF __attribute__((vector_size(4 * W)));
typedef int32_t VI __attribute__((vector_size(4 * W)));
typedef uint32_t VU __attribute__((vector_size(4 * W)));
typedef uint16_t VH __attribute__((vector_size(2 * W)));

FF_HD VF as_f(VI v) { return (VF)v; }
FF_HD VF as_f(VU v) { return (VF)v; }
FF_HD VI as_i(VF v) { return (VI)v; }
FF_HD VU as_u(VF v) { return (VU)v; }
template <class T>
FF_HD T splat_i(int32_t c) {
  T v{};
  return v + c;
}

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1], plus k*ln2 (k exact).
FF_HD VF log1p_reduced(VF f, VF k) {
  const VF z = f * f;
  VF p = splat<VF>(7.0376836292e-2f);
  p = p * f + -1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f + -1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f + -1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f + -2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  VF y = p * f * z;
  y = y + k * -2.12194440e-4f;
  y = y - 0.5f * z;
  return (f + y) + k * 0.693359375f;
}

struct VecMath {
  // exp(x) for x <= 88; x < -104 gives 0.
  static FF_HD VF exp(VF x) {
    x = (x < splat<VF>(-104.0f)) ? splat<VF>(-104.0f) : x;
    x = (x > splat<VF>(88.0f)) ? splat<VF>(88.0f) : x;
    const VF magic = splat<VF>(12582912.0f);  // 1.5 * 2^23: rounds to an integer
    const VF kn = x * 1.44269504088896341f + magic;
    const VF n = kn - magic;
    const VI ni = as_i(kn) - as_i(magic);
    VF r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const VF z = r * r;
    VF p = splat<VF>(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const VF y = p * z + r + 1.0f;
    // 2^n in two normal factors (n is in [-150, 127]).
    const VI n1 = ni >> 1;
    const VI n2 = ni - n1;
    return (y * as_f((n1 + 127) << 23)) * as_f((n2 + 127) << 23);
  }

  // log1p(t) for t in [0, 1].
  static FF_HD VF log1p01(VF t) {
    const auto big = t > splat<VF>(0.41421356f);
    const VF f = big ? t * 0.5f - 0.5f : t;  // both exact
    const VF k = big ? splat<VF>(1.0f) : splat<VF>(0.0f);
    return log1p_reduced(f, k);
  }

  // log(d) for normal d > 0.
  static FF_HD VF log(VF d) {
    const VI bits = as_i(d);
    VI e = ((bits >> 23) & 0xff) - 126;  // d = m * 2^e, m in [0.5, 1)
    const VF m = as_f((bits & (int32_t)0x807fffff) | 0x3f000000);
    const auto small = m < splat<VF>(0.70710678f);
    e = small ? e - 1 : e;
    const VF f = small ? (m + m) - 1.0f : m - 1.0f;  // exact
    return log1p_reduced(f, __builtin_convertvector(e, VF));
  }
};

// ---- float16 / bfloat16 <-> float32 (bit exact, round to nearest even) ----

FF_HD VF half_to_float(VH h16) {
  const VU h = __builtin_convertvector(h16, VU);
  const VU sign = (h & 0x8000u) << 16;
  VU o = (h & 0x7fffu) << 13;
  const VU e = o & (0x7c00u << 13);
  o = o + ((127u - 15u) << 23);
  o = (e == (0x7c00u << 13)) ? o + ((128u - 16u) << 23) : o;  // Inf / NaN
  // subnormal half: renormalise through a float subtraction (exact)
  const VF sub = as_f(o + (1u << 23)) - as_f(splat_i<VU>(113u << 23));
  const VU r = (e == 0u) ? as_u(sub) : o;
  return as_f(r | sign);
}

FF_HD VH float_to_half(VF f) {
  VU u = as_u(f);
  const VU sign = u & 0x80000000u;
  u = u ^ sign;
  const VU f16max = splat_i<VU>((127u + 16u) << 23);
  const VU infty = splat_i<VU>(255u << 23);
  const VF denorm_magic = as_f(splat_i<VU>(((127u - 15u) + (23u - 10u) + 1u) << 23));
  // overflow, Inf, NaN
  const VU o_big = (u > infty) ? splat_i<VU>(0x7e00u) : splat_i<VU>(0x7c00u);
  // result is a half subnormal
  const VU o_sub = as_u(as_f(u) + denorm_magic) - as_u(denorm_magic);
  // normal: round to nearest even
  const VU odd = (u >> 13) & 1u;
  const VU o_norm = (u + (((15u - 127u) << 23) + 0xfffu) + odd) >> 13;
  VU o = (u < splat_i<VU>(113u << 23)) ? o_sub : o_norm;
  o = (u >= f16max) ? o_big : o;
  return __builtin_convertvector(o | (sign >> 16), VH);
}

FF_HD VF bf16_to_float(VH h16) { return as_f(__builtin_convertvector(h16, VU) << 16); }

FF_HD VH float_to_bf16(VF f) {
  const VU u = as_u(f);
  const VU rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const VU nan = (u >> 16) | 0x40u;
  const VU o = ((u & 0x7fffffffu) > 0x7f800000u) ? nan : rounded;
  return __builtin_convertvector(o, VH);
}

// ---- loads and stores of W elements ----

template <int D>
FF_HD VF load_x(const void* p) {
  if (D == FF_FLOAT32) {
    VF v;
    memcpy(&v, p, sizeof(v));
    return v;
  }
  VH h;
  memcpy(&h, p, sizeof(h));
  return D == FF_FLOAT16 ? half_to_float(h) : bf16_to_float(h);
}

template <int D>
FF_HD void store_g(void* p, VF v) {
  if (D == FF_FLOAT32) {
    memcpy(p, &v, sizeof(v));
    return;
  }
  const VH h = D == FF_FLOAT16 ? float_to_half(v) : float_to_bf16(v);
  memcpy(p, &h, sizeof(h));
}

FF_HD VF load_f(const float* p) {
  VF v;
  memcpy(&v, p, sizeof(v));
  return v;
}

constexpr int kElemBytes[3] = {4, 2, 2};

// One vector of W elements starting at flat index i (alpha index k).
template <int D, int A>
FF_HD VF focal_vector(const FusedFocalCpuArgs& a, const FocalParams& p, const char* x,
                      const float* y, const float* w, const float* alpha, float* loss,
                      char* grad, VF scale) {
  const VF yv = load_f(y);
  VF l, g;
  focal_element<VecMath>(load_x<D>(x), yv, p, &l, &g);
  if (A != FF_ALPHA_NONE) {
    const VF av = A == FF_ALPHA_SCALAR ? splat<VF>(a.alpha) : load_f(alpha);
    const VF at = alpha_weight(av, yv, p);
    l = l * at;
    g = g * at;
  }
  if (w) {
    const VF wv = load_f(w);
    l = l * wv;
    g = g * wv;
  }
  if (loss) memcpy(loss, &l, sizeof(l));
  if (grad) store_g<D>(grad, g * scale);
  return l;
}

// Elements [begin, end); returns the loss sum. `begin` is a multiple of C
// when alpha is per class, so alpha_tiled[k] lines up with element begin + k.
template <int D, int A>
double focal_range(const FusedFocalCpuArgs& a, int64_t begin, int64_t end) {
  const FocalParams p = make_params(a.gamma, a.label_smoothing);
  const int eb = kElemBytes[D];
  const VF scale = splat<VF>(a.grad_scale);
  VF acc = splat<VF>(0.0f);
  const int64_t period = A == FF_ALPHA_VECTOR ? a.alpha_period : (int64_t)1 << 62;
  for (int64_t s = begin; s < end; s += period) {
    const int64_t e = (end - s < period) ? end : s + period;
    int64_t i = s;
    for (; i + W <= e; i += W) {
      acc += focal_vector<D, A>(
          a, p, (const char*)a.logits + i * eb, a.labels + i, a.weights ? a.weights + i : nullptr,
          A == FF_ALPHA_VECTOR ? a.alpha_tiled + (i - s) : nullptr, a.loss ? a.loss + i : nullptr,
          a.grad ? (char*)a.grad + i * eb : nullptr, scale);
    }
    if (i < e) {  // tail: pad to a full vector with label 0 / logit 0
      const int m = (int)(e - i);
      alignas(64) char xb[4 * W] = {0};
      alignas(64) char gb[4 * W];
      alignas(64) float yb[W] = {0}, wb[W] = {0}, ab[W] = {0}, lb[W];
      memcpy(xb, (const char*)a.logits + i * eb, m * eb);
      memcpy(yb, a.labels + i, m * sizeof(float));
      if (a.weights) memcpy(wb, a.weights + i, m * sizeof(float));
      if (A == FF_ALPHA_VECTOR) memcpy(ab, a.alpha_tiled + (i - s), m * sizeof(float));
      VF l = focal_vector<D, A>(a, p, xb, yb, a.weights ? wb : nullptr, ab, lb, gb, scale);
      if (a.loss) memcpy(a.loss + i, lb, m * sizeof(float));
      if (a.grad) memcpy((char*)a.grad + i * eb, gb, m * eb);
      for (int j = m; j < W; ++j) l[j] = 0.0f;
      acc += l;
    }
  }
  double total = 0.0;
  for (int j = 0; j < W; ++j) total += acc[j];
  return total;
}

template <int D>
double focal_range_alpha(const FusedFocalCpuArgs& a, int64_t begin, int64_t end) {
  switch (a.alpha_mode) {
    case FF_ALPHA_SCALAR: return focal_range<D, FF_ALPHA_SCALAR>(a, begin, end);
    case FF_ALPHA_VECTOR: return focal_range<D, FF_ALPHA_VECTOR>(a, begin, end);
    default: return focal_range<D, FF_ALPHA_NONE>(a, begin, end);
  }
}

double focal_range_any(const FusedFocalCpuArgs* a, int64_t begin, int64_t end) {
  switch (a->dtype) {
    case FF_FLOAT16: return focal_range_alpha<FF_FLOAT16>(*a, begin, end);
    case FF_BFLOAT16: return focal_range_alpha<FF_BFLOAT16>(*a, begin, end);
    default: return focal_range_alpha<FF_FLOAT32>(*a, begin, end);
  }
}

}  // namespace
}  // namespace fusedfocal

#endif  // FUSEDFOCAL_KERNELS_FOCAL_SIMD_H_
