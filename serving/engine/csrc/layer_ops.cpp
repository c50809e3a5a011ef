// Small fused ops around the quantized products (see serving/engine/model.py), each replacing
// five to eight torch ops per layer, whose dispatch cost dominates a one-token step:
//
// rms_norm(x, w, eps, bf16_out): RMSNorm of float32 rows, the sum of squares accumulated in
//   float32, the result times w written as bfloat16 (the products' input) or float32.
// add_rms_norm(x, y, w, eps, bf16_out): x += y in place (y float32 or bfloat16: a product's
//   output added to the float32 residual stream), then rms_norm of the new x.
// silu_mul(gu): the SwiGLU of the fused gate/up product, silu(gate) * up, computed in float32
//   and rounded once to gu's dtype (bfloat16 or float32); gate is the first half of each row.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

inline float to_f(float v) { return v; }
inline float to_f(c10::BFloat16 v) { return static_cast<float>(v); }

template <typename in_t, typename out_t>
void rms_rows(float* x, const in_t* y, const float* w, out_t* out, int64_t T, int64_t D,
              float eps) {
  at::parallel_for(0, T, 8, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* xr = x + t * D;
      if (y != nullptr) {
        const in_t* yr = y + t * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) xr[i] += to_f(yr[i]);
      }
      float ss = 0.f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
      out_t* o = out + t * D;
#pragma omp simd
      for (int64_t i = 0; i < D; ++i) o[i] = static_cast<out_t>(xr[i] * r * w[i]);
    }
  });
}

at::Tensor norm_impl(at::Tensor& x, const at::Tensor* y, const at::Tensor& w, double eps,
                     bool bf16_out) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2 &&
                  x.is_contiguous(),
              "x must be a contiguous 2-D float32 CPU tensor");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.numel() == x.size(1),
              "w must be a contiguous float32 vector of x's width");
  const int64_t T = x.size(0), D = x.size(1);
  at::Tensor out = at::empty({T, D}, x.options().dtype(bf16_out ? at::kBFloat16 : at::kFloat));
  const float e = static_cast<float>(eps);
  float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
#define SY_NORM(in_t, yptr)                                                                    \
  if (bf16_out)                                                                                \
    rms_rows<in_t, c10::BFloat16>(xp, yptr, wp, out.data_ptr<c10::BFloat16>(), T, D, e);     \
  else                                                                                         \
    rms_rows<in_t, float>(xp, yptr, wp, out.data_ptr<float>(), T, D, e);
  if (y == nullptr) {
    SY_NORM(float, static_cast<const float*>(nullptr))
  } else {
    TORCH_CHECK(y->sizes() == x.sizes() && y->is_contiguous(), "y must be x's shape, contiguous");
    if (y->scalar_type() == at::kBFloat16) {
      SY_NORM(c10::BFloat16, y->data_ptr<c10::BFloat16>())
    } else {
      TORCH_CHECK(y->scalar_type() == at::kFloat, "y must be float32 or bfloat16");
      SY_NORM(float, y->data_ptr<float>())
    }
  }
#undef SY_NORM
  return out;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps, bool bf16_out) {
  at::Tensor xc = x;
  return norm_impl(xc, nullptr, w, eps, bf16_out);
}

at::Tensor add_rms_norm(at::Tensor x, const at::Tensor& y, const at::Tensor& w, double eps,
                        bool bf16_out) {
  return norm_impl(x, &y, w, eps, bf16_out);
}

#if defined(__AVX512F__)
// exp(x) for x <= 0: 2^n * p(r), degree-6 polynomial (relative error about 2e-7).
inline __m512 exp_neg16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(c10::BFloat16* p, __m512 v) {
  // Round to nearest even, as c10::BFloat16's conversion does (inputs here are finite).
  __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  bits = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtepi32_epi16(_mm512_srli_epi32(bits, 16)));
}
#endif

template <typename T>
void silu_mul_rows(const T* gu, T* out, int64_t rows, int64_t F) {
  at::parallel_for(0, rows, 4, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* g = gu + t * 2 * F;
      const T* u = g + F;
      T* o = out + t * F;
      int64_t i = 0;
#if defined(__AVX512F__)
      const __m512 one = _mm512_set1_ps(1.0f);
      for (; i + 16 <= F; i += 16) {
        const __m512 gv = load16(g + i);
        // sigmoid(g) = 1 / (1 + e^-g) for g >= 0, e^g / (1 + e^g) otherwise: one exp of -|g|.
        const __m512 e = exp_neg16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(gv)));
        const __m512 inv = _mm512_div_ps(one, _mm512_add_ps(one, e));
        const __mmask16 neg = _mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ);
        const __m512 sig = _mm512_mask_mul_ps(inv, neg, inv, e);
        store16(o + i, _mm512_mul_ps(_mm512_mul_ps(gv, sig), load16(u + i)));
      }
#endif
      for (; i < F; ++i) {
        const float gv = to_f(g[i]);
        o[i] = static_cast<T>(gv / (1.0f + std::exp(-gv)) * to_f(u[i]));
      }
    }
  });
}

at::Tensor silu_mul(const at::Tensor& gu) {
  TORCH_CHECK(gu.device().is_cpu() && gu.dim() == 2 && gu.size(1) % 2 == 0,
              "gu must be a 2-D CPU tensor of even width");
  const at::Tensor g = gu.contiguous();
  const int64_t rows = g.size(0), F = g.size(1) / 2;
  at::Tensor out = at::empty({rows, F}, g.options());
  if (g.scalar_type() == at::kBFloat16) {
    silu_mul_rows<c10::BFloat16>(g.data_ptr<c10::BFloat16>(), out.data_ptr<c10::BFloat16>(),
                                 rows, F);
  } else {
    TORCH_CHECK(g.scalar_type() == at::kFloat, "gu must be float32 or bfloat16");
    silu_mul_rows<float>(g.data_ptr<float>(), out.data_ptr<float>(), rows, F);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(switchyard, m) {
  m.def("rms_norm(Tensor x, Tensor w, float eps, bool bf16_out) -> Tensor");
  m.def("add_rms_norm(Tensor(a!) x, Tensor y, Tensor w, float eps, bool bf16_out) -> Tensor");
  m.def("silu_mul(Tensor gu) -> Tensor");
}

TORCH_LIBRARY_IMPL(switchyard, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("silu_mul", &silu_mul);
}
