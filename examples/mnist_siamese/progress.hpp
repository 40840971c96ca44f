// Training progress on stdout. On a terminal one live line is redrawn with '\r' (at most ten
// times a second, so printing never costs training time); in a log or pipe a plain line is
// written at every evaluation instead, because '\r' would turn a log file into one huge line.
#pragma once

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace mnist_siamese {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// "m:ss", or "h:mm:ss" from an hour on.
inline std::string clock_time(double seconds) {
  const long s = std::lround(std::max(seconds, 0.0));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

class Progress {
 public:
  /// Iterations first+1 .. total will be reported; batch_pairs converts them to pairs/s.
  Progress(long long first, long long total, std::size_t batch_pairs, bool live)
      : first_(first),
        total_(total),
        it_(first),
        pairs_(batch_pairs),
        live_(live),
        window_(50, 0.0) {}

  /// Records iteration `it` (1-based) with its batch loss (NaN for a skipped batch).
  void step(long long it, double loss) {
    it_ = it;
    last_ = loss;
    if (std::isfinite(loss)) {  // moving average of the last 50 finite losses
      sum_ += loss - window_[next_];
      window_[next_] = loss;
      next_ = (next_ + 1) % window_.size();
      count_ = std::min(count_ + 1, window_.size());
    }
    if (live_ && seconds_since(drawn_) > 0.1) draw();
  }

  /// Reports an evaluation: the mean contrastive loss per test pair.
  void eval(long long it, double test_loss) {
    it_ = it;
    test_loss_ = test_loss;
    if (live_)
      draw();
    else
      std::printf("%s\n", line().c_str());
    std::fflush(stdout);
  }

  /// Prints a message on its own line without garbling the live line.
  void note(const std::string& text) {
    if (live_) std::printf("\r\033[K");
    std::printf("%s\n", text.c_str());
    if (live_) draw();
    std::fflush(stdout);
  }

  /// Ends the live line (once; later calls do nothing).
  void finish() {
    if (live_ && !finished_) {
      finished_ = true;
      draw();
      std::printf("\n");
      std::fflush(stdout);
    }
  }

  double smoothed() const { return count_ ? sum_ / static_cast<double>(count_) : NAN; }

 private:
  void draw() {
    std::printf("\r\033[K%s", line().c_str());
    std::fflush(stdout);
    drawn_ = Clock::now();
  }

  // The live line stays under 80 columns: a wrapped line cannot be redrawn with '\r'.
  std::string line() const {
    char buf[256];
    const int w = static_cast<int>(std::to_string(total_).size());
    int n = std::snprintf(buf, sizeof buf, live_ ? "[%*lld/%lld]" : "iteration %*lld/%lld", w, it_,
                          total_);
    const auto put = [&](auto... args) {
      n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), args...);
    };
    if (!std::isnan(last_))
      put(live_ ? " loss %.4f avg %.4f" : "  loss %.4f  avg50 %.4f", last_, smoothed());
    if (!std::isnan(test_loss_)) put(live_ ? " test %.4g" : "  test pair loss %.5g", test_loss_);
    if (it_ == first_) return buf;  // before the first step there is no rate yet
    const double elapsed = seconds_since(start_);
    const double rate = static_cast<double>(it_ - first_) / elapsed;  // evaluations included
    put(live_ ? "  %.0f pairs/s  %s ETA %s" : "  %.0f pairs/s  elapsed %s  ETA %s",
        rate * static_cast<double>(pairs_), clock_time(elapsed).c_str(),
        clock_time(static_cast<double>(total_ - it_) / rate).c_str());
    return buf;
  }

  long long first_, total_, it_;
  std::size_t pairs_;
  bool live_, finished_ = false;
  std::vector<double> window_;
  std::size_t next_ = 0, count_ = 0;
  double sum_ = 0.0, last_ = NAN, test_loss_ = NAN;
  Clock::time_point start_ = Clock::now(), drawn_{};
};

}  // namespace mnist_siamese
