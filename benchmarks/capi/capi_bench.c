/* Times the C API on a saved model (driven by benchmarks/c_api.py):
 *   capi_bench MODEL T B REPEATS THREADS
 * prints "forward <median us>" (x (T, B, input) zeros... random-ish values) and
 * "step <median us>" (a stream of one row, one step per call). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rnncore/c_api.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s MODEL T B REPEATS THREADS\n", argv[0]);
    return 2;
  }
  const int64_t T = atoll(argv[2]), B = atoll(argv[3]);
  const int repeats = atoi(argv[4]);
  if (rnncore_set_num_threads(atoi(argv[5])) != 0) {
    fprintf(stderr, "%s\n", rnncore_last_error());
    return 1;
  }
  rnncore_model* m = rnncore_model_load(argv[1], NULL);
  if (!m) {
    fprintf(stderr, "%s\n", rnncore_last_error());
    return 1;
  }
  const int64_t in = rnncore_model_input_size(m), out = rnncore_model_output_size(m);
  float* x = malloc((size_t)(T * B * in) * sizeof *x);
  float* y = malloc((size_t)(T * B * out) * sizeof *y);
  double* t = malloc((size_t)repeats * sizeof *t);
  for (int64_t i = 0; i < T * B * in; ++i) x[i] = (float)((i * 7919 % 2001) - 1000) / 1000.0f;
  rnncore_model_forward(m, x, T, B, NULL, y, NULL, NULL); /* warm-up */
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now_us();
    if (rnncore_model_forward(m, x, T, B, NULL, y, NULL, NULL) != 0) return 1;
    t[r] = now_us() - t0;
  }
  printf("forward %.2f\n", median(t, repeats));
  rnncore_stream* s = rnncore_stream_new(m, 1);
  if (!s) {
    fprintf(stderr, "%s\n", rnncore_last_error());
    return 1;
  }
  const int steps = 200;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now_us();
    for (int k = 0; k < steps; ++k)
      if (rnncore_stream_step(s, x + (k % T) * in, y) != 0) return 1;
    t[r] = (now_us() - t0) / steps;
  }
  printf("step %.3f\n", median(t, repeats));
  printf("isa %s\n", rnncore_isa());
  rnncore_stream_free(s);
  rnncore_model_free(m);
  free(x), free(y), free(t);
  return 0;
}
