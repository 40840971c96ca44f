// Checkpoints: everything a run needs to continue bit for bit. A checkpoint is an archive
// (io/archive.hpp) of
//   param/<i>/<name>  f32|f64   the network's parameters, then its buffers (BatchNorm's running
//                               statistics), numbered as a model file numbers them
//   optim/<i>         f32|f64   the optimizer's state tensors (Optimizer::state_tensors)
//   state             u64 [8]   TrainingState::pack(): the batch source's generator, the
//                               optimizer's step count and the iteration
//   streams           u64 [n]   the layers' random streams (Dropout's seed and step); only
//                               when the network has any
//   losses            f32 [n]   the caller's loss history
//   settings          text      the run's settings, "key=value" lines
// and any records the caller adds (io::model_records makes the checkpoint a model file too).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "siam/io/model_file.hpp"
#include "siam/nn/layers.hpp"
#include "siam/optim/optimizer.hpp"
#include "siam/random.hpp"

namespace siam {

/// The counters of a run, besides its tensors: what a checkpoint stores in its "state" and
/// "streams" records and what data-parallel training broadcasts after one is read.
struct TrainingState {
  Rng::State rng{};                    ///< the batch source's generator
  long long optimizer_steps = 0;       ///< Optimizer::steps()
  long long iteration = 0;             ///< the trainer's iteration
  std::vector<std::uint64_t> streams;  ///< nn::Layer::streams(), in order

  static constexpr std::size_t packed_words = 8;
  /// Everything but `streams`, as 8 words: the generator's 4 words, its spare normal's bits,
  /// whether it holds one, the step count and the iteration.
  std::array<std::uint64_t, packed_words> pack() const {
    std::uint64_t spare_bits;
    std::memcpy(&spare_bits, &rng.spare, sizeof spare_bits);
    return {rng.s[0],
            rng.s[1],
            rng.s[2],
            rng.s[3],
            spare_bits,
            rng.has_spare ? 1u : 0u,
            static_cast<std::uint64_t>(optimizer_steps),
            static_cast<std::uint64_t>(iteration)};
  }
  /// The inverse of pack() (streams left empty).
  static TrainingState unpack(const std::uint64_t* w) {
    TrainingState s;
    s.rng = Rng::State{{w[0], w[1], w[2], w[3]}, 0.0, w[5] != 0};
    std::memcpy(&s.rng.spare, &w[4], sizeof s.rng.spare);
    s.optimizer_steps = static_cast<long long>(w[6]);
    s.iteration = static_cast<long long>(w[7]);
    return s;
  }
};

/// What a checkpoint stores of a network: its parameters, then its buffers (model files'
/// order, so a checkpoint with io::model_records loads as a model).
template <class T, class B>
std::vector<Parameter<T, B>*> checkpoint_tensors(nn::Layer<T, B>& net) {
  auto out = net.parameters();
  for (auto* b : net.buffers())
    out.push_back(b);
  return out;
}

/// A checkpoint's contents besides the tensors it wrote back.
struct CheckpointContents {
  TrainingState state;
  std::vector<float> losses;
  std::string settings;
};

/// Writes a checkpoint atomically: `tensors` (checkpoint_tensors), the optimizer's state,
/// `state`, `losses` and `settings`, after the `extra` records.
template <class T, class B>
void write_checkpoint(const std::filesystem::path& path,
                      const std::vector<Parameter<T, B>*>& tensors, optim::Optimizer<T, B>& opt,
                      const TrainingState& state, const std::vector<float>& losses,
                      const std::string& settings, std::vector<io::Record> extra = {}) {
  auto records = std::move(extra);
  for (auto& r : io::parameter_records(tensors))
    records.push_back(std::move(r));
  const auto opt_state = opt.state_tensors();
  for (std::size_t i = 0; i < opt_state.size(); ++i)
    records.push_back(io::tensor_record("optim/" + std::to_string(i), *opt_state[i]));
  const auto words = state.pack();
  records.push_back(
      io::make_record("state", {TrainingState::packed_words}, words.data(), words.size()));
  if (!state.streams.empty())
    records.push_back(io::make_record("streams", {static_cast<std::int64_t>(state.streams.size())},
                                      state.streams.data(), state.streams.size()));
  records.push_back(io::make_record("losses", {static_cast<std::int64_t>(losses.size())},
                                    losses.data(), losses.size()));
  records.push_back(io::make_text_record("settings", settings));
  io::save_archive(path, records);
}

namespace detail {

// Settings are "key=value" lines; the first line that differs is named.
inline void check_settings(const std::string& file, const std::string& saved,
                           const std::string& now) {
  if (saved == now) return;
  std::istringstream a(saved), b(now);
  std::string la, lb;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(a, la));
    const bool gb = static_cast<bool>(std::getline(b, lb));
    if (!ga && !gb) return;
    if (!ga) la.clear();
    if (!gb) lb.clear();
    if (la != lb) {
      const auto key = (la.empty() ? lb : la).substr(0, (la.empty() ? lb : la).find('='));
      throw value_error(file + ": the checkpoint was written with " +
                        (la.empty() ? "no " + key : la) + ", this run has " +
                        (lb.empty() ? "no " + key : lb) +
                        " (resume with the same settings, or override explicitly)");
    }
  }
}

}  // namespace detail

/// Reads a checkpoint written by write_checkpoint into `tensors` and the optimizer's state
/// and returns the rest; `streams` is the number of stream words (nn::Layer::streams) the network
/// has. Throws io_error for a corrupt file or one of another network, and value_error when it was
/// written under other settings than `settings` (naming the first that differs) unless
/// `allow_other_settings`. Nothing is changed unless the settings agree.
template <class T, class B>
CheckpointContents read_checkpoint(const std::filesystem::path& path,
                                   const std::vector<Parameter<T, B>*>& tensors,
                                   optim::Optimizer<T, B>& opt, std::size_t streams,
                                   const std::string& settings, bool allow_other_settings) {
  const auto records = io::load_archive(path);
  const std::string file = path.string();
  auto find = [&](const std::string& name) -> const io::Record& {
    for (const auto& r : records)
      if (r.name == name) return r;
    throw io_error(file + ": not a checkpoint of this trainer (no '" + name + "' record)");
  };
  CheckpointContents out;
  const auto& set = find("settings");
  if (set.type != io::ArrayType::text) throw io_error(file + ": malformed settings record");
  out.settings = set.text();
  if (!allow_other_settings) detail::check_settings(file, out.settings, settings);
  const auto& st = find("state");
  if (st.type != io::ArrayType::u64 || st.count() != TrainingState::packed_words)
    throw io_error(file + ": malformed state record");
  out.state = TrainingState::unpack(st.template as<std::uint64_t>().data());
  if (streams > 0) {
    const auto& c = find("streams");
    if (c.type != io::ArrayType::u64 || c.count() != streams)
      throw io_error(file + ": the network has " + std::to_string(streams) +
                     " random stream words, the checkpoint's record holds " +
                     std::to_string(c.count()));
    out.state.streams = c.template as<std::uint64_t>();
  }
  const auto& l = find("losses");
  if (l.type != io::ArrayType::f32) throw io_error(file + ": malformed loss history");
  out.losses = l.template as<float>();
  io::load_parameters(records, tensors, file);
  const auto opt_state = opt.state_tensors();
  for (std::size_t i = 0; i < opt_state.size(); ++i)
    io::load_tensor(find("optim/" + std::to_string(i)), *opt_state[i], file);
  return out;
}

}  // namespace siam
