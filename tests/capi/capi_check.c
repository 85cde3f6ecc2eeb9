/* The C API as a C program uses it, driven by tests/test_c_api.py:
 *
 *   capi_check forward MODEL NAME X T B LENGTHS OUT   x, lengths: raw float32 / int64
 *   capi_check stream  MODEL NAME X T B OUT           frame by frame, then in chunks
 *   capi_check threads MODEL NAME X T B N             N threads vs one serial call
 *   capi_check errors  MODEL CORRUPT MAPPING DIR      bad input: errors, no abort
 *   capi_check isa                                    prints the instruction set in use
 *
 * NAME "-" passes NULL; LENGTHS "-" passes NULL. Outputs are raw float32
 * files (OUT.out, OUT.hn, OUT.cn; OUT.steps, OUT.chunks). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rnncore/c_api.h"

static void* read_all(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void* p = malloc(n > 0 ? (size_t)n : 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return p;
}

static int write_all(const char* path, const char* suffix, const float* p, int64_t n) {
  char name[4096];
  snprintf(name, sizeof name, "%s%s", path, suffix);
  FILE* f = fopen(name, "wb");
  if (!f) return 1;
  size_t ok = fwrite(p, sizeof *p, (size_t)n, f);
  fclose(f);
  return ok == (size_t)n ? 0 : 1;
}

static rnncore_model* load(const char* path, const char* name) {
  rnncore_model* m = rnncore_model_load(path, strcmp(name, "-") ? name : NULL);
  if (!m) fprintf(stderr, "load failed (%d): %s\n", rnncore_last_error_code(), rnncore_last_error());
  return m;
}

static int cmd_forward(char** a) {
  rnncore_model* m = load(a[0], a[1]);
  if (!m) return 1;
  size_t nx, nl = 0;
  float* x = read_all(a[2], &nx);
  const int64_t T = atoll(a[3]), B = atoll(a[4]);
  int64_t* lengths = strcmp(a[5], "-") ? read_all(a[5], &nl) : NULL;
  const int64_t nout = T * B * rnncore_model_output_size(m);
  const int64_t nh = B * rnncore_model_state_size(m, 0), nc = B * rnncore_model_state_size(m, 1);
  float* out = malloc((size_t)nout * sizeof *out);
  float* hn = malloc((size_t)nh * sizeof *hn);
  float* cn = malloc((size_t)(nc > 0 ? nc : 1) * sizeof *cn);
  int rc = rnncore_model_forward(m, x, T, B, lengths, out, hn, cn);
  if (rc) fprintf(stderr, "forward failed (%d): %s\n", rc, rnncore_last_error());
  if (!rc) rc = write_all(a[6], ".out", out, nout) || write_all(a[6], ".hn", hn, nh) ||
                write_all(a[6], ".cn", cn, nc);
  /* Without h_n / c_n the outputs are the same. */
  if (!rc) {
    float* out2 = malloc((size_t)nout * sizeof *out2);
    rc = rnncore_model_forward(m, x, T, B, lengths, out2, NULL, NULL);
    if (!rc && memcmp(out, out2, (size_t)nout * sizeof *out)) {
      fprintf(stderr, "forward without states differs\n");
      rc = 1;
    }
    free(out2);
  }
  free(x), free(lengths), free(out), free(hn), free(cn);
  rnncore_model_free(m);
  return rc;
}

static int cmd_stream(char** a) {
  rnncore_model* m = load(a[0], a[1]);
  if (!m) return 1;
  size_t nx;
  float* x = read_all(a[2], &nx);
  const int64_t T = atoll(a[3]), B = atoll(a[4]);
  const int64_t in = rnncore_model_input_size(m), H = rnncore_model_output_size(m);
  rnncore_stream* s = rnncore_stream_new(m, B);
  rnncore_model_free(m); /* the stream keeps the model alive */
  if (!s) {
    fprintf(stderr, "stream failed: %s\n", rnncore_last_error());
    free(x);
    return 1;
  }
  float* y = malloc((size_t)(T * B * H) * sizeof *y);
  int rc = 0;
  for (int64_t t = 0; t < T && !rc; ++t) rc = rnncore_stream_step(s, x + t * B * in, y + t * B * H);
  if (!rc) rc = write_all(a[5], ".steps", y, T * B * H);
  /* After a reset, the same sequence in two chunks. */
  rnncore_stream_reset(s);
  const int64_t first = T / 2;
  if (!rc && first > 0) rc = rnncore_stream_step_many(s, x, first, y);
  if (!rc) rc = rnncore_stream_step_many(s, x + first * B * in, T - first, y + first * B * H);
  if (!rc) rc = write_all(a[5], ".chunks", y, T * B * H);
  if (rc) fprintf(stderr, "stream step failed: %s\n", rnncore_last_error());
  free(x), free(y);
  rnncore_stream_free(s);
  return rc;
}

struct job {
  const rnncore_model* m;
  const float* x;
  int64_t T, B, n;
  float* out;
  int rc;
};

static void* run_job(void* p) {
  struct job* j = p;
  for (int k = 0; k < 3 && !j->rc; ++k) j->rc = rnncore_model_forward(j->m, j->x, j->T, j->B, NULL, j->out, NULL, NULL);
  return NULL;
}

static int cmd_threads(char** a) {
  rnncore_model* m = load(a[0], a[1]);
  if (!m) return 1;
  size_t nx;
  float* x = read_all(a[2], &nx);
  const int64_t T = atoll(a[3]), B = atoll(a[4]);
  const int n = atoi(a[5]);
  const int64_t nout = T * B * rnncore_model_output_size(m);
  float* serial = malloc((size_t)nout * sizeof *serial);
  int rc = rnncore_model_forward(m, x, T, B, NULL, serial, NULL, NULL);
  struct job jobs[64];
  pthread_t threads[64];
  for (int i = 0; i < n && i < 64; ++i) {
    jobs[i] = (struct job){m, x, T, B, nout, malloc((size_t)nout * sizeof(float)), 0};
    pthread_create(&threads[i], NULL, run_job, &jobs[i]);
  }
  for (int i = 0; i < n && i < 64; ++i) {
    pthread_join(threads[i], NULL);
    if (jobs[i].rc || memcmp(jobs[i].out, serial, (size_t)nout * sizeof(float))) rc = 1;
    free(jobs[i].out);
  }
  printf(rc ? "threads: differ\n" : "threads: ok\n");
  free(x), free(serial);
  rnncore_model_free(m);
  return rc;
}

static int failures = 0;

/* One bad call: it must fail with a code and a message. */
static void expect(const char* what, int failed, int code) {
  const char* msg = rnncore_last_error();
  if (!failed || code == 0 || !msg[0]) {
    printf("NOT REJECTED %s\n", what);
    ++failures;
    return;
  }
  printf("%s: %d: %s\n", what, code, msg);
}

static int cmd_errors(char** a) {
  const char* good = a[0];
  char path[4096];
  rnncore_model* m;
  m = rnncore_model_load(NULL, NULL);
  expect("load NULL path", m == NULL, rnncore_last_error_code());
  snprintf(path, sizeof path, "%s/missing.safetensors", a[3]);
  m = rnncore_model_load(path, NULL);
  expect("load missing", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(a[3], NULL);
  expect("load directory", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(a[1], NULL);
  expect("load corrupt", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(a[2], "nope");
  expect("load unknown name", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(a[2], NULL);
  expect("load ambiguous", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(a[2], "head");
  expect("load linear", m == NULL, rnncore_last_error_code());
  m = rnncore_model_load(good, "encoder");
  expect("load name of single", m == NULL, rnncore_last_error_code());

  expect("input_size NULL", rnncore_model_input_size(NULL) == -1, rnncore_last_error_code());
  expect("output_size NULL", rnncore_model_output_size(NULL) == -1, rnncore_last_error_code());
  expect("state_size NULL", rnncore_model_state_size(NULL, 0) == -1, rnncore_last_error_code());
  m = rnncore_model_load(good, NULL);
  if (!m) {
    printf("cannot load %s: %s\n", good, rnncore_last_error());
    return 1;
  }
  expect("state_size which=2", rnncore_model_state_size(m, 2) == -1, rnncore_last_error_code());
  expect("state_size which=-1", rnncore_model_state_size(m, -1) == -1, rnncore_last_error_code());
  const int64_t in = rnncore_model_input_size(m), H = rnncore_model_output_size(m);
  float x[64 * 4] = {0}, out[64 * 4] = {0};
  int64_t lengths[2] = {3, 0};
  int rc;
  rc = rnncore_model_forward(NULL, x, 1, 1, NULL, out, NULL, NULL);
  expect("forward NULL model", rc != 0, rc);
  rc = rnncore_model_forward(m, NULL, 1, 1, NULL, out, NULL, NULL);
  expect("forward NULL x", rc != 0, rc);
  rc = rnncore_model_forward(m, x, 1, 1, NULL, NULL, NULL, NULL);
  expect("forward NULL out", rc != 0, rc);
  rc = rnncore_model_forward(m, x, 0, 1, NULL, out, NULL, NULL);
  expect("forward T=0", rc != 0, rc);
  rc = rnncore_model_forward(m, x, 1, -3, NULL, out, NULL, NULL);
  expect("forward B=-3", rc != 0, rc);
  rc = rnncore_model_forward(m, x, INT64_MAX / 2, 4, NULL, out, NULL, NULL);
  expect("forward huge T", rc != 0, rc);
  rc = rnncore_model_forward(m, x, 3, 2, lengths, out, NULL, NULL);
  expect("forward length 0", rc != 0, rc);
  lengths[1] = 4;
  rc = rnncore_model_forward(m, x, 3, 2, lengths, out, NULL, NULL);
  expect("forward length > T", rc != 0, rc);

  rnncore_stream* s = rnncore_stream_new(NULL, 1);
  expect("stream NULL model", s == NULL, rnncore_last_error_code());
  s = rnncore_stream_new(m, 0);
  expect("stream batch 0", s == NULL, rnncore_last_error_code());
  s = rnncore_stream_new(m, -1);
  expect("stream batch -1", s == NULL, rnncore_last_error_code());
  s = rnncore_stream_new(m, 2);
  if (!s) {
    printf("cannot make a stream: %s\n", rnncore_last_error());
    return 1;
  }
  rc = rnncore_stream_step(NULL, x, out);
  expect("step NULL stream", rc != 0, rc);
  rc = rnncore_stream_step(s, NULL, out);
  expect("step NULL x", rc != 0, rc);
  rc = rnncore_stream_step(s, x, NULL);
  expect("step NULL y", rc != 0, rc);
  rc = rnncore_stream_step_many(s, x, 0, out);
  expect("step_many T=0", rc != 0, rc);
  rc = rnncore_stream_reset_row(s, 2);
  expect("reset_row 2 of 2", rc != 0, rc);
  expect("stream_batch NULL", rnncore_stream_batch(NULL) == -1, rnncore_last_error_code());
  rc = rnncore_set_num_threads(0);
  expect("set_num_threads 0", rc != 0, rc);
  rnncore_stream_reset(NULL);
  rnncore_stream_free(NULL);
  rnncore_model_free(NULL);
  /* Still works after all that. */
  if (in > 64 || H > 64 || rnncore_stream_step(s, x, out) != 0 ||
      rnncore_model_forward(m, x, 2, 2, NULL, out, NULL, NULL) != 0) {
    printf("the model stopped working: %s\n", rnncore_last_error());
    ++failures;
  }
  rnncore_stream_free(s);
  rnncore_model_free(m);
  printf("version %s isa %s threads %d\n", rnncore_version(), rnncore_isa(),
         rnncore_get_num_threads());
  printf(failures ? "errors: %d failures\n" : "errors: ok\n", failures);
  return failures != 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && !strcmp(argv[1], "isa")) {
    const char* isa = rnncore_isa();
    if (!isa[0]) {
      printf("error %d: %s\n", rnncore_last_error_code(), rnncore_last_error());
      return 1;
    }
    printf("%s\n", isa);
    return 0;
  }
  if (argc >= 9 && !strcmp(argv[1], "forward")) return cmd_forward(argv + 2);
  if (argc >= 8 && !strcmp(argv[1], "stream")) return cmd_stream(argv + 2);
  if (argc >= 8 && !strcmp(argv[1], "threads")) return cmd_threads(argv + 2);
  if (argc >= 6 && !strcmp(argv[1], "errors")) return cmd_errors(argv + 2);
  fprintf(stderr, "usage: see the comment at the top of capi_check.c\n");
  return 2;
}
