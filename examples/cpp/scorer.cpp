// A multi-threaded scorer: N worker threads share one loaded model (models
// are immutable and thread-safe); each worker has its own stream, steps its
// sequences through it frame by frame and scores each by its last output.
//
//   scorer MODEL SEQUENCES THREADS [NAME]
//
// SEQUENCES: a text file with one sequence per line, its frames' numbers
// back to back (a multiple of input_size). Prints, per sequence in file
// order, the model's output at the sequence's last frame.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rnncore/rnncore.hpp"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " MODEL SEQUENCES THREADS [NAME]\n";
    return 2;
  }
  try {
    const rnncore::LoadedModel model = rnncore::load(argv[1], argc > 4 ? argv[4] : "");
    std::vector<std::vector<float>> sequences;
    std::ifstream in(argv[2]);
    for (std::string line; std::getline(in, line);) {
      std::istringstream numbers(line);
      std::vector<float> seq;
      for (float v; numbers >> v;) seq.push_back(v);
      if (!seq.empty()) sequences.push_back(std::move(seq));
    }
    const int workers = std::stoi(argv[3]);
    rnncore_set_num_threads(1);  // the workers are the parallelism: one core each
    std::vector<std::vector<float>> scores(sequences.size());
    std::vector<std::string> errors(static_cast<size_t>(workers));
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        try {
          rnncore::ModelStream stream = model.stream(1);  // this worker's own state
          const size_t width = static_cast<size_t>(model.input_size());
          for (size_t k = static_cast<size_t>(w); k < sequences.size(); k += workers) {
            stream.reset();
            std::vector<float> y;
            for (size_t t = 0; t + width <= sequences[k].size(); t += width)
              y = stream.step(std::vector<float>(sequences[k].begin() + t,
                                                 sequences[k].begin() + t + width));
            scores[k] = y;
          }
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(w)] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
      if (!e.empty()) throw std::runtime_error(e);
    for (size_t k = 0; k < scores.size(); ++k) {
      std::printf("%zu:", k);
      for (float v : scores[k]) std::printf(" %.9g", v);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::cerr << "scorer: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
