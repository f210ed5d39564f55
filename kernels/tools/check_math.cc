// Error bounds of the CPU polynomials in focal_simd.h, and agreement of the
// scalar instantiation of focal_element() (the one CUDA uses, here with host
// libm) with the vector one. Framework-free; build and run:
//
//   g++ -O2 -std=c++17 -march=x86-64-v3 -Ikernels kernels/tools/check_math.cc -o /tmp/check_math
//   /tmp/check_math [stride]      # stride 1 = every float32 in each range
//
// Prints the largest error in units in the last place (ulp of the float32
// result; the reference is libm in double) and exits with status 1 when a
// bound is exceeded: 2 ulp for exp/log1p/log (the bounds focal_simd.h
// states), and for the scalar vs vector element formula a loss relative
// difference of 1e-5 and a gradient difference of 1e-3 (|diff| / (|g| + 1e-6)).
// tests/kernels/test_check_math.py compiles and runs it for each instruction
// set the CPU has.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "focal_simd.h"

using namespace fusedfocal;

static double ulp_of(double r) {
  if (r == 0) return ldexp(1.0, -149);
  int e;
  frexp(r, &e);  // r = m * 2^e, m in [0.5, 1)
  return ldexp(1.0, (e - 1 - 23) < -149 ? -149 : e - 1 - 23);
}

static const double kUlpBound = 2.0, kLossBound = 1e-5, kGradBound = 1e-3;
static int failures = 0;

template <class F, class G>
static void scan(const char* name, float lo, float hi, unsigned stride, F vec, G ref) {
  uint32_t a, b;
  memcpy(&a, &lo, 4);
  memcpy(&b, &hi, 4);
  if (a > b) { uint32_t t = a; a = b; b = t; }  // negative range: bits run backwards
  double worst = 0;
  float worst_x = 0;
  alignas(64) float in[W], out[W];
  int k = 0;
  for (uint64_t u = a;; u += stride) {
    if (u > b) u = b;
    uint32_t bits = (uint32_t)u;
    memcpy(&in[k], &bits, 4);
    if (++k == W || u == b) {
      VF v;
      memcpy(&v, in, sizeof v);
      VF r = vec(v);
      memcpy(out, &r, sizeof r);
      for (int j = 0; j < k; ++j) {
        const double exact = ref((double)in[j]);
        const double err = fabs((double)out[j] - exact) / ulp_of(exact);
        if (err > worst) { worst = err; worst_x = in[j]; }
      }
      k = 0;
    }
    if (u == b) break;
  }
  printf("%-10s [%g, %g] stride %u: max error %.3f ulp (at %.9g)\n", name, lo, hi, stride, worst,
         worst_x);
  if (!(worst <= kUlpBound)) {
    printf("FAIL: %s max error %.3f ulp > %.1f ulp\n", name, worst, kUlpBound);
    ++failures;
  }
}

struct HostMath {
  static float exp(float x) { return expf(x); }
  static float log1p01(float t) { return log1pf(t); }
  static float log(float d) { return logf(d); }
};

int main(int argc, char** argv) {
  const unsigned stride = argc > 1 ? (unsigned)atoi(argv[1]) : 1;
  scan("exp", -104.0f, -0.0f, stride, [](VF v) { return VecMath::exp(v); },
       [](double x) { return exp(x); });
  scan("log1p", 0.0f, 1.0f, stride, [](VF v) { return VecMath::log1p01(v); },
       [](double x) { return log1p(x); });
  scan("log", 1.17549435e-38f, 1.0f, stride, [](VF v) { return VecMath::log(v); },
       [](double x) { return log(x); });
  // Scalar (CUDA-style) vs vector instantiation of the whole element formula.
  srand(1);
  double worst = 0, worst_g = 0;
  const float gammas[] = {0.0f, 0.5f, 1.0f, 2.0f, 3.7f, 20.5f};
  for (float gamma : gammas) {
    const FocalParams p = make_params(gamma, 0.1f);
    for (int i = 0; i < 200000; i += W) {
      alignas(64) float xs[W], ys[W], lv[W], gv[W];
      for (int j = 0; j < W; ++j) {
        xs[j] = (float)((rand() / (double)RAND_MAX - 0.5) * 60.0);
        ys[j] = (float)(rand() / (double)RAND_MAX);
      }
      VF x, y, l, g;
      memcpy(&x, xs, sizeof x);
      memcpy(&y, ys, sizeof y);
      focal_element<VecMath>(x, y, p, &l, &g);
      memcpy(lv, &l, sizeof l);
      memcpy(gv, &g, sizeof g);
      for (int j = 0; j < W; ++j) {
        float ls, gs;
        focal_element<HostMath>(xs[j], ys[j], p, &ls, &gs);
        const double el = fabs(lv[j] - ls) / (fabs(ls) + 1e-30);
        // the gradient crosses zero (soft labels): relative error plus 1e-6 absolute
        const double eg = fabs(gv[j] - gs) / (fabs(gs) + 1e-6 * 1.0);
        if (el > worst) worst = el;
        if (eg > worst_g) worst_g = eg;
      }
    }
  }
  printf("scalar(libm) vs vector focal_element: loss max relative difference %.3g, "
         "grad max |diff| / (|g| + 1e-6) %.3g\n", worst, worst_g);
  if (!(worst <= kLossBound)) {
    printf("FAIL: focal_element loss difference %.3g > %g\n", worst, kLossBound);
    ++failures;
  }
  if (!(worst_g <= kGradBound)) {
    printf("FAIL: focal_element grad difference %.3g > %g\n", worst_g, kGradBound);
    ++failures;
  }
  return failures ? 1 : 0;
}
