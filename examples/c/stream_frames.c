/* Streams frames through a recurrent model, one frame at a time, as they
 * would arrive from a microphone or a sensor, and prints each step's output.
 *
 *   stream_frames MODEL FRAMES [NAME]
 *
 * MODEL: a file written by rnncore.save (NAME: the module's key when the file
 * holds several). FRAMES: a text file with one frame per line, input_size
 * numbers each. Prints one line per frame: the model's H_out outputs. */
#include <stdio.h>
#include <stdlib.h>

#include "rnncore/c_api.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL FRAMES [NAME]\n", argv[0]);
    return 2;
  }
  rnncore_model* model = rnncore_model_load(argv[1], argc > 3 ? argv[3] : NULL);
  if (!model) {
    fprintf(stderr, "cannot load the model: %s\n", rnncore_last_error());
    return 1;
  }
  rnncore_stream* stream = rnncore_stream_new(model, 1); /* one sequence */
  if (!stream) {
    fprintf(stderr, "cannot stream this model: %s\n", rnncore_last_error());
    rnncore_model_free(model);
    return 1;
  }
  const int64_t in = rnncore_model_input_size(model);
  const int64_t out = rnncore_model_output_size(model);
  float* x = malloc((size_t)in * sizeof *x);
  float* y = malloc((size_t)out * sizeof *y);
  FILE* frames = fopen(argv[2], "r");
  int status = 0;
  if (!x || !y || !frames) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    status = 1;
  }
  while (status == 0) {
    int64_t i = 0;
    for (; i < in; ++i)
      if (fscanf(frames, "%f", &x[i]) != 1) break;
    if (i == 0) break; /* the end of the file */
    if (i < in) {
      fprintf(stderr, "a frame needs %lld numbers\n", (long long)in);
      status = 1;
      break;
    }
    if (rnncore_stream_step(stream, x, y) != 0) {
      fprintf(stderr, "step failed: %s\n", rnncore_last_error());
      status = 1;
      break;
    }
    for (int64_t j = 0; j < out; ++j) printf(j ? " %.9g" : "%.9g", y[j]);
    printf("\n");
  }
  if (frames) fclose(frames);
  free(x);
  free(y);
  rnncore_stream_free(stream);
  rnncore_model_free(model);
  return status;
}
