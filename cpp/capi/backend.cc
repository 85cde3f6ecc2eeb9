// A backend's table (backend.h): the C API of c_api.cc, compiled for one
// instruction set, handed to the front library.
#include "backend.h"

#ifndef RNNCORE_ISA_NAME
#define RNNCORE_ISA_NAME "baseline"
#endif

extern "C" RNNCORE_BACKEND_EXPORT const rnncore_backend_v1* rnncore_backend_v1_table(void) {
  static const rnncore_backend_v1 table = {
      sizeof(rnncore_backend_v1),
      rnncore_version(),
      RNNCORE_ISA_NAME,
      &rnncore_last_error,
      &rnncore_last_error_code,
      &rnncore_model_load,
      &rnncore_model_free,
      &rnncore_model_input_size,
      &rnncore_model_output_size,
      &rnncore_model_state_size,
      &rnncore_model_forward_from,
      &rnncore_stream_new,
      &rnncore_stream_step_many,
      &rnncore_stream_reset,
      &rnncore_stream_reset_row,
      &rnncore_stream_batch,
      &rnncore_stream_free,
      &rnncore_set_num_threads,
      &rnncore_get_num_threads,
  };
  return &table;
}
