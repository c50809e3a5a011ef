// q8_0_linear: y = x @ W.T for GGUF Q8_0 weights, read as stored (see serving/engine/quant.py).
//
// W is int8 codes q (N, K) with one float32 scale per block of 32 along a row, d (N, K/32):
// w[n, k] = d[n, k/32] * q[n, k]. x is float32 (M, K); y is float32 (M, N). Each output is a
// float32 sum in a fixed order (blocks left to right, 16 lanes, then the lanes), so a row's
// result does not depend on how many rows are in the batch.
//
// Work is split over output features in chunks of 32 (18 KB of codes for K = 576, kept in L1);
// every tile of up to eight rows of x passes a chunk, so each weight block is widened to float
// once per eight rows and weights are read from memory once per call. AVX-512 where the CPU has it, a portable loop otherwise.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t QK = 32;
constexpr int64_t MT = 8;   // rows of x per pass over a weight row
constexpr int64_t NT = 32;  // weight rows kept in L1 while every row tile of x passes them

#if defined(__AVX512F__)
template <int R>
inline void q8_rows_avx512(const float* x, int64_t ldx, const int8_t* q, const float* d,
                           int64_t nb, float* y, int64_t ldy) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* qb = q + b * QK;
    const __m512 db = _mm512_set1_ps(d[b]);
    const __m512 w0 = _mm512_mul_ps(
        db, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)qb))));
    const __m512 w1 = _mm512_mul_ps(
        db, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(qb + 16)))));
    for (int r = 0; r < R; ++r) {
      const float* xb = x + r * ldx + b * QK;
      acc[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), acc[r]);
      acc[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) y[r * ldy] = _mm512_reduce_add_ps(acc[r]);
}
#endif

template <int R>
inline void q8_rows_portable(const float* x, int64_t ldx, const int8_t* q, const float* d,
                             int64_t nb, float* y, int64_t ldy) {
  float acc[R][16] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* qb = q + b * QK;
    float w[QK];
    for (int i = 0; i < QK; ++i) w[i] = d[b] * static_cast<float>(qb[i]);
    for (int r = 0; r < R; ++r) {
      const float* xb = x + r * ldx + b * QK;
#pragma omp simd
      for (int i = 0; i < 16; ++i) acc[r][i] += w[i] * xb[i] + w[i + 16] * xb[i + 16];
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = 0.f;
    for (int i = 0; i < 16; ++i) s += acc[r][i];
    y[r * ldy] = s;
  }
}

template <int R>
inline void q8_rows(const float* x, int64_t ldx, const int8_t* q, const float* d, int64_t nb,
                    float* y, int64_t ldy) {
#if defined(__AVX512F__)
  q8_rows_avx512<R>(x, ldx, q, d, nb, y, ldy);
#else
  q8_rows_portable<R>(x, ldx, q, d, nb, y, ldy);
#endif
}

at::Tensor q8_0_linear(const at::Tensor& x, const at::Tensor& q, const at::Tensor& d) {
  TORCH_CHECK(x.device().is_cpu(), "q8_0_linear runs on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2, "x must be float32 (M, K)");
  TORCH_CHECK(q.scalar_type() == at::kChar && q.dim() == 2, "q must be int8 (N, K)");
  TORCH_CHECK(d.scalar_type() == at::kFloat && d.dim() == 2, "d must be float32 (N, K/32)");
  const int64_t M = x.size(0), K = x.size(1), N = q.size(0);
  TORCH_CHECK(q.size(1) == K && K % QK == 0, "q must be (N, K) with K a multiple of 32");
  TORCH_CHECK(d.size(0) == N && d.size(1) == K / QK, "d must be (N, K/32)");
  const at::Tensor xc = x.contiguous(), qc = q.contiguous(), dc = d.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = xc.data_ptr<float>();
  const int8_t* qp = qc.data_ptr<int8_t>();
  const float* dp = dc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t nb = K / QK;
  at::parallel_for(0, N, NT, [&](int64_t begin, int64_t end) {
    for (int64_t n0 = begin; n0 < end; n0 += NT) {
      const int64_t n1 = std::min<int64_t>(n0 + NT, end);
      for (int64_t m0 = 0; m0 < M; m0 += MT) {
        const int64_t rows = std::min<int64_t>(MT, M - m0);
        const float* xm = xp + m0 * K;
        for (int64_t n = n0; n < n1; ++n) {
          const int8_t* qn = qp + n * K;
          const float* dn = dp + n * nb;
          float* yn = yp + m0 * N + n;
          switch (rows) {
            case 8: q8_rows<8>(xm, K, qn, dn, nb, yn, N); break;
            case 7: q8_rows<7>(xm, K, qn, dn, nb, yn, N); break;
            case 6: q8_rows<6>(xm, K, qn, dn, nb, yn, N); break;
            case 5: q8_rows<5>(xm, K, qn, dn, nb, yn, N); break;
            case 4: q8_rows<4>(xm, K, qn, dn, nb, yn, N); break;
            case 3: q8_rows<3>(xm, K, qn, dn, nb, yn, N); break;
            case 2: q8_rows<2>(xm, K, qn, dn, nb, yn, N); break;
            default: q8_rows<1>(xm, K, qn, dn, nb, yn, N); break;
          }
        }
      }
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(switchyard, m) {
  m.def("q8_0_linear(Tensor x, Tensor q, Tensor d) -> Tensor");
}

TORCH_LIBRARY_IMPL(switchyard, CPU, m) { m.impl("q8_0_linear", &q8_0_linear); }
