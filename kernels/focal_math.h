// Fused sigmoid focal loss: forward and backward in one pass.
//
// Framework-free (no TensorFlow, no Eigen, no CUDA runtime calls): the same
// element formula is instantiated for CUDA (scalar float, device libm) and
// for the CPU (GCC vector types, see focal_simd.h). It is the formulation of
// src/fusedfocal/ops/focal.py::focal_loss_and_grad, in float32:
//
//   y_s = y*(1-ls) + ls/2;  ax = |x|;  t = exp(-ax);  u = x >= 0 ? 1-y_s : y_s
//   ce  = u*ax + log1p(t);  inv = 1/(1+t);  sn = t*inv;  g = u - sn
//   gamma > 0:  d = u + (1-u)*t;  q = d*inv                     (q = 1 - p_t)
//               mod = q^n * exp(frac*((u > 0 ? log d : -ax) - log1p t))
//               r = d > 0 ? sn/d : 0
//               g = mod*(g + gamma*(2u-1)*r*ce);  loss = mod*ce
//   gamma = 0:  loss = ce
//   grad = x >= 0 ? g : -g;  alpha_t = (1-a) + (2a-1)*y_s;  both *= alpha_t*w
//
// n = floor(gamma) (repeated squaring) and frac = gamma - n; for gamma > 16
// n = 0 and frac = gamma (long products lose more than exp/log).
//
// Everything is a sum of non-negative terms, so there is no cancellation and
// no clipping; the formula is finite for every finite x.
//
// Everything in this header has internal linkage (anonymous namespace): the
// CPU library compiles it once per instruction set (SSE2, AVX2, AVX-512) and
// the copies must never be merged by the linker.
#ifndef FUSEDFOCAL_KERNELS_FOCAL_MATH_H_
#define FUSEDFOCAL_KERNELS_FOCAL_MATH_H_

#if defined(__CUDACC__)
#define FF_HD __host__ __device__ __forceinline__
#else
#define FF_HD inline __attribute__((always_inline))
#endif

namespace fusedfocal {
namespace {

constexpr int kMaxIntPower = 16;
constexpr float kFltMin = 1.17549435e-38f;

// Static hyper-parameters, decoded once per call.
struct FocalParams {
  float gamma;            // >= 0
  int n;                  // integer part of gamma, applied by repeated squaring
  float frac;             // remaining exponent, applied through exp/log
  float keep;             // 1 - label_smoothing
  float half_ls;          // label_smoothing / 2
};

FF_HD FocalParams make_params(float gamma, float label_smoothing) {
  FocalParams p;
  p.gamma = gamma;
  p.n = static_cast<int>(gamma);
  p.frac = gamma - static_cast<float>(p.n);
  if (p.n > kMaxIntPower) {
    p.n = 0;
    p.frac = gamma;
  }
  p.keep = 1.0f - label_smoothing;
  p.half_ls = 0.5f * label_smoothing;
  return p;
}

// A broadcast constant of type V (float or a GCC vector of floats).
template <class V>
FF_HD V splat(float c) {
  V v{};
  return v + c;
}

// q**n for a small non-negative n (uniform across lanes).
template <class V>
FF_HD V int_power(V base, int n) {
  V result = splat<V>(1.0f);
  while (n) {
    if (n & 1) result = result * base;
    n >>= 1;
    if (n) base = base * base;
  }
  return result;
}

// Loss and d loss / d x for one element (or one vector of elements).
//
// `M` supplies exp (any argument <= 0 here), log1p01 (argument in [0, 1])
// and log (argument in (0, 1]); `y` is the raw label, smoothing is applied
// here. Both outputs still need the alpha_t / weight factor.
template <class M, class V>
FF_HD void focal_element(V x, V y, const FocalParams& p, V* loss, V* grad) {
  const V zero = splat<V>(0.0f);
  const V one = splat<V>(1.0f);
  const V ys = y * p.keep + p.half_ls;
  const V ax = (x < zero) ? -x : x;
  const V t = M::exp(-ax);
  const auto nonneg = x >= zero;
  const V u = nonneg ? one - ys : ys;
  const V log1p_t = M::log1p01(t);
  const V ce = u * ax + log1p_t;
  const V inv = one / (one + t);
  const V sn = t * inv;  // sigmoid(-|x|)
  V g = u - sn;          // sign(x) * (sigmoid(x) - y)
  V l = ce;
  if (p.gamma > 0.0f) {
    const V d = u + (one - u) * t;
    V mod = p.n ? int_power(d * inv, p.n) : one;
    if (p.frac != 0.0f) {
      // log(d) is exactly -|x| when u == 0 and keeps q**frac accurate there.
      const V dd = (d > splat<V>(kFltMin)) ? d : splat<V>(kFltMin);
      const V log_d = (u > zero) ? M::log(dd) : -ax;
      mod = mod * M::exp(p.frac * (log_d - log1p_t));
    }
    const V r = (d > zero) ? sn / d : zero;
    g = mod * (g + p.gamma * (u + u - one) * r * ce);
    l = mod * ce;
  }
  *loss = l;
  *grad = nonneg ? g : -g;
}

// alpha_t = alpha*y_s + (1-alpha)*(1-y_s), written as in focal.py.
template <class V>
FF_HD V alpha_weight(V a, V y, const FocalParams& p) {
  const V ys = y * p.keep + p.half_ls;
  return (splat<V>(1.0f) - a) + (a + a - splat<V>(1.0f)) * ys;
}

}  // namespace
}  // namespace fusedfocal

#endif  // FUSEDFOCAL_KERNELS_FOCAL_MATH_H_
