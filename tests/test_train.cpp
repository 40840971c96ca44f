// The general trainer and what users handle around it: any label set, every library loss
// with the source it needs, a user's own loss, resume (bit-identical, and refused under
// other settings), zero allocations per steady-state step, tape-free inference, and
// self-describing model files.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <siam/inference.hpp>
#include <siam/io/json.hpp>
#include <siam/io/model_file.hpp>
#include <siam/siamese.hpp>
#include <siam/train/siamese_trainer.hpp>
#include <string>
#include <vector>

#include "support/alloc_counter.hpp"

using siam::Cpu;
using siam::index_t;
using siam::Rng;
using siam::Shape;
using Tensor = siam::Tensor<float, Cpu>;
namespace fs = std::filesystem;

namespace {
/// n points of `dim` features around one centre per class; labels are `classes` values.
siam::data::Dataset clusters(std::size_t n, std::size_t dim, const std::vector<int>& classes,
                             std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<float>> centres;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    centres.emplace_back();
    for (std::size_t d = 0; d < dim; ++d)
      centres.back().push_back(static_cast<float>(rng.uniform(0, 1)));
  }
  siam::data::Dataset d;
  d.rows = 1;
  d.cols = dim;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = i % classes.size();
    d.labels.push_back(static_cast<std::uint8_t>(classes[c]));
    for (std::size_t k = 0; k < dim; ++k)
      d.images.push_back(centres[c][k] + static_cast<float>(rng.uniform(-0.15, 0.15)));
  }
  return d;
}
fs::path temp(const std::string& name) {
  return fs::temp_directory_path() / ("siam_train_" + name);
}

siam::nn::Sequential<float, Cpu> load_f32(const fs::path& p) {
  return siam::io::load_model<float, Cpu>(p);
}
void make_trainer(const siam::data::Dataset& d, const siam::SiameseConfig& c) {
  siam::SiameseTrainer<float, Cpu> t(d, c);
}
double mean(const std::vector<double>& v, std::size_t b, std::size_t e) {
  double s = 0;
  for (std::size_t i = b; i < e; ++i)
    s += v[i];
  return s / double(e - b);
}
}  // namespace

TEST_CASE(
    "general trainer: a 20-64-64-3 network on 3-class data with labels 3, 7, 11, every loss") {
  const auto data = clusters(150, 20, {3, 7, 11}, 1);
  siam::ImageSet<float, Cpu> set(data);
  for (const std::string loss : {"contrastive", "triplet", "batch-hard", "batch-all", "ntxent"}) {
    CAPTURE(loss);
    siam::SiameseConfig cfg;
    cfg.layers = {20, 64, 64, 3};
    cfg.loss = loss;
    cfg.margin = loss == "contrastive" ? 0.5 : 0.2;
    cfg.adam.lr = 1e-3;
    cfg.batch_pairs = 24;
    siam::SiameseTrainer<float, Cpu> t(data, cfg);
    // The documented layouts: 2 * 24 images per step; P = 3 classes of K = 2 * 24 / 3.
    const std::string want = loss == "contrastive" ? "pairs n=24"
                             : loss == "triplet"   ? "triplets n=16"
                             : loss == "ntxent"    ? "positive-pairs n=24"
                                                   : "pk p=3 k=16";
    CHECK(t.trainer_source() == want);
    std::vector<double> losses;
    for (int s = 0; s < 80; ++s)
      losses.push_back(t.step());
    CHECK(mean(losses, 60, 80) < mean(losses, 0, 20));
    for (double l : losses)
      CHECK(std::isfinite(l));
  }
}

TEST_CASE(
    "general trainer: a user's network, optimizer, source and loss (written with public ops)") {
  const auto data = clusters(120, 10, {0, 1, 2, 3}, 2);
  siam::ImageSet<float, Cpu> set(data);
  Rng rng(3);
  siam::nn::Sequential<float, Cpu> net;
  net.add<siam::nn::Dense<float, Cpu>>(10, 32, rng)
      .add<siam::nn::Tanh<float, Cpu>>()
      .add<siam::nn::Dense<float, Cpu>>(32, 4, rng)
      .add<siam::nn::L2Normalize<float, Cpu>>();
  net.set_input_shape(Shape{10});
  siam::optim::SGD<float, Cpu> sgd(net.parameters(), {0.05, 0.9, 0, 1e-4, true});
  siam::TripletBatches<float, Cpu> source(set, 32, 4);
  // the triplet loss by hand: relu(|a - p|^2 - |a - n|^2 + 0.3), mean over triplets
  siam::LossFn<float, Cpu> loss = [](siam::Var<float, Cpu> f, const siam::Batch<float, Cpu>&,
                                     siam::Tape<float, Cpu>&) {
    const index_t n = f.shape().rows() / 3;
    auto a = slice_rows(f, 0, n), p = slice_rows(f, n, n), q = slice_rows(f, 2 * n, n);
    auto dp = sum(square(a - p), 1), dn = sum(square(a - q), 1);
    return mean(relu(dp - dn + 0.3f));
  };
  siam::optim::Schedule cosine = siam::optim::CosineLR(0.05, 60, 0, 5);
  siam::Trainer<float, Cpu> trainer(net, sgd, source, loss, {true, 1.0, cosine, "test=1"});
  std::vector<double> losses;
  for (int s = 0; s < 60; ++s)
    losses.push_back(trainer.step());
  CHECK(mean(losses, 45, 60) < 0.5 * mean(losses, 0, 15));
  CHECK(sgd.lr() == doctest::Approx(cosine.lr_at(59)));
}

TEST_CASE("resume is bit-identical (AdamW, cosine schedule); other settings are refused") {
  const auto data = clusters(90, 12, {5, 6, 9}, 5);
  siam::SiameseConfig cfg;
  cfg.layers = {12, 16, 2};
  cfg.optimizer = "adamw";
  cfg.weight_decay = 0.01;
  cfg.schedule = "cosine";
  cfg.warmup = 3;
  cfg.iterations = 12;
  cfg.batch_pairs = 10;
  cfg.adam.lr = 1e-2;
  siam::SiameseTrainer<float, Cpu> straight(data, cfg);
  for (int s = 0; s < 12; ++s)
    straight.step();
  siam::SiameseTrainer<float, Cpu> first(data, cfg);
  std::vector<float> hist;
  for (int s = 0; s < 5; ++s)
    hist.push_back(static_cast<float>(first.step()));
  const fs::path ck = temp("resume.siam");
  first.save_checkpoint(ck, hist);
  siam::SiameseTrainer<float, Cpu> second(data, cfg);
  CHECK(second.load_checkpoint(ck) == hist);
  CHECK(second.iteration() == 5);
  for (int s = 5; s < 12; ++s)
    second.step();
  const auto a = straight.network().parameters(), b = second.network().parameters();
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK(a[i]->value.to_vector() == b[i]->value.to_vector());

  // a different margin: refused, naming it; accepted with the override
  siam::SiameseConfig other = cfg;
  other.margin = 0.5;
  siam::SiameseTrainer<float, Cpu> third(data, other);
  try {
    third.load_checkpoint(ck);
    FAIL("no error");
  } catch (const siam::value_error& e) {
    CHECK(std::string(e.what()).find("margin=0.300000") != std::string::npos);
    CHECK(std::string(e.what()).find("margin=0.500000") != std::string::npos);
  }
  CHECK_NOTHROW(third.load_checkpoint(ck, true));
  // a checkpoint is a model file too
  auto net = siam::io::load_model<float, Cpu>(ck);
  CHECK(net.describe() == first.network().describe());
  fs::remove(ck);
}

TEST_CASE("no heap allocation in a steady-state step, for each optimizer") {
  const auto data = clusters(60, 16, {0, 1}, 6);
  for (const std::string opt : {"adam", "adamw", "sgd"})
    for (const std::string sched : {"constant", "cosine"}) {
      CAPTURE(opt);
      CAPTURE(sched);
      siam::SiameseConfig cfg;
      cfg.layers = {16, 32, 2};
      cfg.optimizer = opt;
      cfg.schedule = sched;
      cfg.batch_pairs = 12;
      cfg.clip_norm = 10;
      siam::SiameseTrainer<float, Cpu> t(data, cfg);
      for (int s = 0; s < 3; ++s)
        t.step();
      const long before = alloc_counter::count.load();
      for (int s = 0; s < 5; ++s)
        t.step();
      CHECK(alloc_counter::count.load() - before == 0);
    }
}

TEST_CASE("graph mode replays the eager step: the same losses and weights, no allocation") {
  // On the CPU a replay runs the captured work again, so this checks everything the graph mode
  // adds around the step: scalars uploaded per step, the device-side finite gate, the apply
  // row picked exactly. The replayed update rounds like the eager one up to FMA contraction.
  const auto data = clusters(90, 12, {0, 1, 2}, 11);
  for (const std::string opt : {"adam", "adamw"})
    for (const std::string sched : {"constant", "cosine"})
      for (const bool check : {true, false}) {
        CAPTURE(opt);
        CAPTURE(sched);
        CAPTURE(check);
        siam::SiameseConfig cfg;
        cfg.optimizer = opt;
        cfg.weight_decay = opt == "adamw" ? 0.01 : 0.0;
        cfg.layers = {12, 32, 3};
        cfg.schedule = sched;
        cfg.iterations = 30;
        cfg.batch_pairs = 16;
        cfg.adam.lr = 1e-2;
        cfg.check_finite = check;
        siam::SiameseTrainer<float, Cpu> eager(data, cfg);
        cfg.graph = true;
        siam::SiameseTrainer<float, Cpu> graph(data, cfg);
        long news = 0;
        for (int s = 0; s < 30; ++s) {
          CAPTURE(s);
          const double a = eager.step();
          const long before = alloc_counter::count.load();
          const double b = graph.step();
          if (s >= 3) news += alloc_counter::count.load() - before;
          CHECK(b == doctest::Approx(a).epsilon(1e-4));
        }
        CHECK(news == 0);
        CHECK(graph.trainer().graph_captures() == 1);
        CHECK(graph.optimizer().steps() == 30);
        // Weights only: the contrastive loss does not change when every embedding shifts by the
        // same vector, so the output bias, and the bias of a hidden unit that is active for every
        // input, get gradients that are rounding noise, which Adam scales to steps of size lr.
        const auto pe = eager.network().parameters(), pg = graph.network().parameters();
        for (std::size_t i = 0; i < pe.size(); i += 2) {
          const auto we = pe[i]->value.to_vector(), wg = pg[i]->value.to_vector();
          for (std::size_t j = 0; j < we.size(); ++j)
            CHECK(wg[j] == doctest::Approx(we[j]).epsilon(1e-4).scale(1e-3));
        }
      }
}

TEST_CASE("graph mode: a NaN step is skipped on the device, then named; the model is untouched") {
  const auto data = clusters(60, 8, {0, 1}, 12);
  siam::ImageSet<float, Cpu> set(data);
  Rng rng(13);
  auto net = siam::nn::mlp<float, Cpu>({8, 16, 2}, rng);
  siam::optim::Adam<float, Cpu> adam(net.parameters(), {1e-2, 0.9, 0.99, 1e-8});
  siam::PairBatches<float, Cpu> source(set, 8, 14);
  // The loss reads a scale from a tensor by address, as the captured work would on a GPU.
  Tensor scale = Tensor::from(Shape{1}, {1.0f});
  siam::LossFn<float, Cpu> loss = [&scale](siam::Var<float, Cpu> f, const siam::Batch<float, Cpu>&,
                                           siam::Tape<float, Cpu>& tape) {
    return sum(square(f)) * broadcast_scalar(tape.constant(scale), Shape{1});
  };
  siam::TrainerOptions opts;
  opts.graph = true;
  opts.graph_check_every = 1000;
  siam::Trainer<float, Cpu> trainer(net, adam, source, loss, opts);
  for (int s = 0; s < 5; ++s)
    trainer.step_async();
  trainer.check_replayed();  // nothing skipped
  std::vector<std::vector<float>> before;
  for (auto* p : net.parameters())
    before.push_back(p->value.to_vector());
  const auto m_before = adam.first_moments()[0].to_vector();
  scale[0] = std::numeric_limits<float>::quiet_NaN();
  trainer.step_async();  // iteration 6: NaN, skipped
  scale[0] = 1.0f;
  trainer.step_async();  // 7 and 8 are skipped too: the gate stays shut until the host knows
  trainer.step_async();
  CHECK_THROWS_WITH_AS(trainer.check_replayed(), doctest::Contains("iteration 6"),
                       siam::numeric_error);
  CHECK(trainer.iteration() == 5);
  CHECK(adam.steps() == 5);
  for (std::size_t i = 0; i < before.size(); ++i)
    CHECK(net.parameters()[i]->value.to_vector() == before[i]);
  CHECK(adam.first_moments()[0].to_vector() == m_before);
  // Going on: the next step updates again.
  const double l = trainer.step();
  CHECK(std::isfinite(l));
  CHECK(trainer.iteration() == 6);
  CHECK(adam.steps() == 6);
  CHECK(net.parameters()[0]->value.to_vector() != before[0]);
  // A parameter replaced by another tensor (not written in place): the capture read the old
  // buffer by address, so the next steps warm up and capture again.
  const int captures = trainer.graph_captures();
  auto& w = net.parameters()[0]->value;
  w = Tensor(w);
  trainer.step();
  trainer.step();
  CHECK(trainer.graph_captures() == captures + 1);
}

TEST_CASE("graph mode refuses what it cannot replay, naming it") {
  const auto data = clusters(40, 6, {0, 1}, 15);
  siam::SiameseConfig cfg;
  cfg.layers = {6, 8, 2};
  cfg.batch_pairs = 8;
  cfg.graph = true;
  cfg.optimizer = "sgd";
  siam::SiameseTrainer<float, Cpu> sgd(data, cfg);
  CHECK_THROWS_WITH_AS(sgd.step(), doctest::Contains("replayable"), siam::value_error);
  cfg.optimizer = "adam";
  cfg.clip_norm = 1;
  siam::SiameseTrainer<float, Cpu> clipped(data, cfg);
  CHECK_THROWS_WITH_AS(clipped.step(), doctest::Contains("clipping"), siam::value_error);
}

TEST_CASE(
    "inference: embed() without a tape equals forward(); embed_images batches with progress") {
  const auto data = clusters(37, 8, {1, 2}, 7);
  Rng rng(8);
  auto net = siam::nn::mlp<float, Cpu>({8, 16, 3}, rng);
  Tensor x = Tensor::from(Shape{37, 8}, std::span<const float>(data.images));
  siam::Tape<float, Cpu> tape;
  const auto ref = net.forward(tape.constant(x)).value().to_vector();
  CHECK(net.embed(x).to_vector() == ref);
  CHECK(net.embed(x).to_vector() == ref);  // buffers reused, same result
  std::vector<std::pair<index_t, index_t>> calls;
  const auto all = siam::embed_images(
      net, data, 10, [&](index_t done, index_t total) { calls.emplace_back(done, total); });
  // other batch sizes may take other GEMM kernel paths: equal up to rounding
  REQUIRE(all.size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i)
    CHECK(all[i] == doctest::Approx(ref[i]).epsilon(1e-5));
  CHECK(siam::embed_images(net, data, 1000) == ref);  // one batch: the same computation
  REQUIRE(calls.size() == 4);
  CHECK(calls.back() == std::pair<index_t, index_t>{37, 37});
  // the same rows already on the backend: no upload, the same values
  CHECK(siam::embed_rows(net, x, 1000) == ref);
  CHECK(siam::embed_rows(net, x, 10) == all);
  CHECK_THROWS_AS(siam::embed_rows(net, x, 0), siam::value_error);
  Tensor wrong(Shape{2, 5});
  CHECK_THROWS_AS(siam::embed_rows(net, wrong), siam::value_error);
  CHECK_THROWS_AS(net.embed(wrong), siam::shape_error);
}

TEST_CASE("inference: embed_images shrinks its batch to bound the network's buffers") {
  const auto data = clusters(300, 8, {1, 2}, 9);
  auto make = [] {
    Rng rng(8);
    return siam::nn::mlp<float, Cpu>({8, 64, 64, 3}, rng);
  };
  auto run = [&](siam::nn::Sequential<float, Cpu>& net, std::size_t max_bytes,
                 std::vector<index_t>& done) {
    done.clear();
    return siam::embed_images(
        net, data,
        siam::EmbedOptions{.batch = 1000,
                           .max_bytes = max_bytes,
                           .progress = [&](index_t d, index_t) { done.push_back(d); }});
  };
  std::vector<index_t> done;
  auto whole = make();
  const auto ref = run(whole, 0, done);  // no bound: one batch of 300
  CHECK(done == std::vector<index_t>{300});
  const std::size_t full = whole.embed_bytes();
  REQUIRE(full > 0);
  CHECK(whole.embed_rows() == 300);
  auto bounded = make();
  const auto part = run(bounded, full / 5, done);  // about 60 rows' worth
  CHECK(done.size() >= 5);
  CHECK(done.back() == 300);
  CHECK(bounded.embed_bytes() <= full / 5);
  REQUIRE(part.size() == ref.size());
  for (std::size_t i = 0; i < ref.size(); ++i)
    CHECK(part[i] == doctest::Approx(ref[i]).epsilon(1e-5));
  // A bound the network fits in changes nothing: the same batches, the same values.
  auto roomy = make();
  CHECK(run(roomy, std::size_t{1} << 30, done) == ref);
  CHECK(done == std::vector<index_t>{300});
  // A bound below one image still embeds, one image at a time.
  auto tiny = make();
  CHECK(run(tiny, 1, done).size() == ref.size());
  CHECK(done.size() == 300);
  tiny.release_embed_buffers();
  CHECK(tiny.embed_bytes() == 0);
  CHECK(tiny.embed_rows() == 0);
}

TEST_CASE("trainer: a NaN in the input batch is named as such, not as a gradient's") {
  auto data = clusters(40, 8, {1, 2}, 7);
  siam::SiameseConfig cfg;
  cfg.layers = {8, 16, 3};
  cfg.batch_pairs = 8;
  siam::SiameseTrainer<float, Cpu> clean(data, cfg);
  CHECK(std::isfinite(clean.step()));
  for (std::size_t i = 0; i < data.size(); ++i)
    data.images[i * 8 + 3] = std::numeric_limits<float>::quiet_NaN();  // pixel 3 of every image
  siam::SiameseTrainer<float, Cpu> t(data, cfg);
  CHECK_THROWS_WITH_AS(t.step(), "iteration 1: the input batch holds NaN at row 0, column 3",
                       siam::numeric_error);
}

TEST_CASE("inference: check_finite names the first NaN or inf input by row and column") {
  auto data = clusters(37, 8, {1, 2}, 7);
  Rng rng(8);
  auto net = siam::nn::mlp<float, Cpu>({8, 16, 3}, rng);
  const siam::EmbedOptions check{.batch = 10, .check_finite = true};
  CHECK(siam::embed_images(net, data, check) == siam::embed_images(net, data, 10));  // clean
  data.images[25 * 8 + 5] = std::numeric_limits<float>::quiet_NaN();
  data.images[31 * 8 + 0] = std::numeric_limits<float>::infinity();
  // Off by default (the NaN propagates); on, the error names image 25, pixel 5, in batch 3.
  CHECK_NOTHROW(siam::embed_images(net, data, 10));
  CHECK_THROWS_WITH_AS(siam::embed_images(net, data, check),
                       doctest::Contains("embed: input row 25, column 5 is nan"),
                       siam::numeric_error);
  data.images[25 * 8 + 5] = 0.5f;
  CHECK_THROWS_WITH_AS(siam::embed_images(net, data, {.check_finite = true}),
                       doctest::Contains("row 31, column 0 is inf"), siam::numeric_error);
  // The same check on rows already on the backend; the last value of the last row counts.
  data.images[31 * 8 + 0] = 0.5f;
  data.images[36 * 8 + 7] = -std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from(Shape{37, 8}, std::span<const float>(data.images));
  CHECK_NOTHROW(siam::embed_rows(net, x, 10));
  CHECK_THROWS_WITH_AS(siam::embed_rows(net, x, check),
                       doctest::Contains("row 36, column 7 is -inf"), siam::numeric_error);
}

TEST_CASE("a trainer embeds its own training set as embed() does the data it was given") {
  const auto data = clusters(40, 8, {1, 2, 3}, 5);
  siam::SiameseConfig cfg;
  cfg.layers = {8, 16, 2};
  cfg.batch_pairs = 8;
  siam::SiameseTrainer<float, Cpu> t(data, cfg);
  t.step();
  CHECK(t.embed_training_set(16) == t.embed(data, 16));
}

TEST_CASE(
    "model files: self-describing round trip; weights-only, future, other-type and truncated "
    "files") {
  Rng rng(9);
  auto net = siam::nn::mlp<float, Cpu>({20, 64, 64, 3}, rng);
  net.add<siam::nn::L2Normalize<float, Cpu>>(1e-9);
  const fs::path path = temp("model.siam");
  siam::io::save_model(path, net);
  auto back = siam::io::load_model<float, Cpu>(path);
  CHECK(back.describe() == net.describe());
  CHECK(back.input_shape() == Shape{20});
  Tensor x(Shape{4, 20});
  x.fill(0.25f);
  CHECK(back.embed(x).to_vector() == net.embed(x).to_vector());
  // float64 asked of a float32 file: the message names both types
  try {
    siam::io::load_model<double, Cpu>(path);
    FAIL("no error");
  } catch (const siam::io_error& e) {
    CHECK(std::string(e.what()).find("float32") != std::string::npos);
    CHECK(std::string(e.what()).find("float64") != std::string::npos);
  }
  // another architecture than the network it is loaded into
  auto other = siam::nn::mlp<float, Cpu>({20, 32, 3}, rng);
  CHECK_THROWS_AS(siam::io::load_model(path, other), siam::io_error);
  // a future format version
  auto records = siam::io::load_archive(path);
  for (auto& r : records)
    if (r.name == "model/format") {
      const std::uint64_t v = 3;
      r = siam::io::make_record("model/format", {1}, &v, 1);
    }
  const fs::path future = temp("future.siam");
  siam::io::save_archive(future, records);
  try {
    siam::io::load_model<float, Cpu>(future);
    FAIL("no error");
  } catch (const siam::io_error& e) {
    CHECK(std::string(e.what()).find("version 3") != std::string::npos);
  }
  // weights only (format 1)
  const fs::path old = temp("old.siam");
  siam::io::save_model(old, net.parameters());
  CHECK_THROWS_AS(load_f32(old), siam::io_error);
  // an unknown layer kind
  for (auto& r : records)
    if (r.name == "model/arch")
      r = siam::io::make_text_record("model/arch", "Dense in=20 out=64\nWarp k=3\n");
    else if (r.name == "model/format") {
      const std::uint64_t v = 2;
      r = siam::io::make_record("model/format", {1}, &v, 1);
    }
  siam::io::save_archive(future, records);
  CHECK_THROWS_AS(load_f32(future), siam::io_error);
  // truncated
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    REQUIRE(f);
    std::fclose(f);
    fs::resize_file(path, fs::file_size(path) / 2);
  }
  CHECK_THROWS_AS(load_f32(path), siam::io_error);
  fs::remove(path);
  fs::remove(future);
  fs::remove(old);
}

TEST_CASE(
    "archives are written as a stream: the same bytes as encode(); a failure keeps the old file") {
  std::vector<siam::io::Record> records;
  std::vector<float> big(300000);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<float>(i) * 0.5f;
  records.push_back(siam::io::make_record("w", {300, 1000}, big.data(), big.size()));
  records.push_back(siam::io::make_text_record("note", "streamed"));
  const fs::path path = temp("stream.siam");
  siam::io::save_archive(path, records);
  const auto bytes = siam::io::read_file(path, "test");
  CHECK(bytes == siam::io::encode(records));
  const auto back = siam::io::load_archive(path);
  REQUIRE(back.size() == 2);
  CHECK(back[0].as<float>() == big);
  CHECK(back[1].text() == "streamed");
  // A producer that fails half-way: its exception passes through, the old file stays
  // whole and no temporary file is left beside it.
  CHECK_THROWS_AS(siam::io::write_file_atomic_with(path,
                                                   [](auto& put) {
                                                     put("SIAMARCH", 8);
                                                     throw siam::io_error("stop");
                                                   }),
                  siam::io_error);
  CHECK(siam::io::read_file(path, "test") == bytes);
  for (const auto& entry : fs::directory_iterator(path.parent_path()))
    CHECK(entry.path().filename().string().find("stream.siam.tmp") == std::string::npos);
  // A directory that does not exist: an io_error naming the file.
  try {
    siam::io::save_archive(path.parent_path() / "no-such-dir" / "x.siam", records);
    FAIL("no error");
  } catch (const siam::io_error& e) {
    CHECK(std::string(e.what()).find("x.siam") != std::string::npos);
  }
  fs::remove(path);
}

TEST_CASE("samplers name real labels: a class with one image, a P x K batch too large") {
  auto data = clusters(30, 4, {3, 7}, 10);
  data.labels.push_back(11);
  data.images.insert(data.images.end(), 4, 0.5f);
  siam::SiameseConfig cfg;
  cfg.layers = {4, 8, 2};
  try {
    siam::SiameseTrainer<float, Cpu> t(data, cfg);
    FAIL("no error");
  } catch (const siam::value_error& e) {
    CHECK(std::string(e.what()).find("class 11 has 1 image") != std::string::npos);
  }
  cfg.loss = "batch-hard";
  cfg.batch_pairs = 40;  // 80 images: 2 classes of 40 > the 15 images of each
  auto two = clusters(30, 4, {3, 7}, 11);
  CHECK_THROWS_AS(make_trainer(two, cfg), siam::value_error);
}

TEST_CASE(
    "a general trainer's checkpoint records the loss and its margin; a model reader names it") {
  const auto data = clusters(60, 8, {0, 1}, 21);
  siam::ImageSet<float, Cpu> set(data);
  const fs::path ck = temp("loss_margin.siam");
  std::vector<float> hist;
  {
    Rng rng(3);
    auto net = siam::nn::mlp<float, Cpu>({8, 16, 2}, rng);
    siam::optim::Adam<float, Cpu> adam(net.parameters(), {1e-2, 0.9, 0.99, 1e-8});
    siam::PairBatches<float, Cpu> source(set, 8, 14);
    siam::Trainer<float, Cpu> trainer(net, adam, source,
                                      siam::losses::contrastive<float, Cpu>({0.2}));
    hist.push_back(static_cast<float>(trainer.step()));
    CHECK(trainer.settings().find("loss=contrastive margin=0.20000000000000001 reduction=sum\n") !=
          std::string::npos);
    trainer.save_checkpoint(ck, hist);
  }
  const auto resume = [&](siam::LossFn<float, Cpu> loss, bool allow) {
    Rng rng(3);
    auto net = siam::nn::mlp<float, Cpu>({8, 16, 2}, rng);
    siam::optim::Adam<float, Cpu> adam(net.parameters(), {1e-2, 0.9, 0.99, 1e-8});
    siam::PairBatches<float, Cpu> source(set, 8, 14);
    siam::Trainer<float, Cpu> trainer(net, adam, source, std::move(loss));
    return trainer.load_checkpoint(ck, allow);
  };
  CHECK(resume(siam::losses::contrastive<float, Cpu>({0.2}), false) == hist);
  // another margin, another loss: refused, naming both values
  try {
    resume(siam::losses::contrastive<float, Cpu>({0.5}), false);
    FAIL("a different margin was accepted");
  } catch (const siam::value_error& e) {
    const std::string m = e.what();
    CHECK(m.find("loss=contrastive margin=0.20000000000000001") != std::string::npos);
    CHECK(m.find("loss=contrastive margin=0.5 ") != std::string::npos);
  }
  try {
    resume(siam::losses::triplet<float, Cpu>({0.2}), false);
    FAIL("a different loss was accepted");
  } catch (const siam::value_error& e) {
    CHECK(std::string(e.what()).find("loss=triplet margin=0.20000000000000001") !=
          std::string::npos);
  }
  CHECK(resume(siam::losses::contrastive<float, Cpu>({0.5}), true) == hist);
  // read as a model: named as a checkpoint, with how to read it
  try {
    (void)siam::io::load_model<float, Cpu>(ck);
    FAIL("a checkpoint without a model description loaded as a model");
  } catch (const siam::io_error& e) {
    const std::string m = e.what();
    CHECK(m.find("a training checkpoint") != std::string::npos);
    CHECK(m.find("Trainer::load_checkpoint") != std::string::npos);
    CHECK(m.find("weights-only") == std::string::npos);
  }
  fs::remove(ck);
}

namespace {
// Dense, BatchNorm, ReLU, Dropout, Dense: a network whose training depends on its buffers
// (the running statistics feed embed()) and on Dropout's random stream.
siam::nn::Sequential<float, Cpu> bn_dropout_net(std::uint64_t seed) {
  Rng rng(seed);
  siam::nn::Sequential<float, Cpu> net;
  net.add<siam::nn::Dense<float, Cpu>>(8, 16, rng)
      .add<siam::nn::BatchNorm<float, Cpu>>(16)
      .add<siam::nn::ReLU<float, Cpu>>()
      .add<siam::nn::Dropout<float, Cpu>>(0.3, rng)
      .add<siam::nn::Dense<float, Cpu>>(16, 2, rng);
  net.set_input_shape(Shape{8});
  return net;
}
struct BnRun {
  siam::data::Dataset data = clusters(60, 8, {0, 1, 2}, 21);
  siam::ImageSet<float, Cpu> set{data};
  siam::nn::Sequential<float, Cpu> net;
  siam::optim::Adam<float, Cpu> adam;
  siam::PairBatches<float, Cpu> source{set, 8, 22};
  siam::Trainer<float, Cpu> trainer;
  // `net_seed` builds the network: another seed gives other weights and another dropout
  // seed, which a checkpoint must overwrite.
  explicit BnRun(std::uint64_t net_seed)
      : net(bn_dropout_net(net_seed)),
        adam(net.parameters(), {1e-2, 0.9, 0.99, 1e-8}),
        trainer(net, adam, source, siam::losses::contrastive<float, Cpu>({0.5})) {}
  std::vector<std::vector<float>> tensors() {
    std::vector<std::vector<float>> out;
    for (auto* p : net.state())
      out.push_back(p->value.to_vector());
    out.push_back(net.embed(set.images()).to_vector());  // inference: the running statistics
    return out;
  }
};
}  // namespace

TEST_CASE(
    "resume with BatchNorm and Dropout is bit-identical: buffers and streams in checkpoints") {
  const int n = 10;
  BnRun straight(31);
  std::vector<float> losses;
  for (int s = 0; s < n; ++s)
    losses.push_back(static_cast<float>(straight.trainer.step()));
  BnRun first(31);
  std::vector<float> hist;
  for (int s = 0; s < n / 2; ++s)
    hist.push_back(static_cast<float>(first.trainer.step()));
  const fs::path ck = temp("bn_dropout.siam");
  first.trainer.save_checkpoint(ck, hist, siam::io::model_records(first.net));
  BnRun second(99);  // other weights, statistics and dropout seed until the checkpoint loads
  CHECK(second.tensors() != first.tensors());
  CHECK(second.trainer.load_checkpoint(ck) == hist);
  CHECK(second.tensors() == first.tensors());
  for (int s = n / 2; s < n; ++s)
    hist.push_back(static_cast<float>(second.trainer.step()));
  CHECK(hist == losses);
  CHECK(second.tensors() == straight.tensors());
  // The dropout mask differs from step to step, so the stream matters: one step more on a
  // network whose dropout step was set back gives another loss.
  auto& drop = dynamic_cast<siam::nn::Dropout<float, Cpu>&>(second.net[3]);
  CHECK(drop.step() == static_cast<std::uint64_t>(n));
  // The checkpoint is a model file with the running statistics.
  auto model = siam::io::load_model<float, Cpu>(ck);
  CHECK(model.embed(first.set.images()).to_vector() ==
        first.net.embed(first.set.images()).to_vector());
  // A network without the Dropout layer has no stream words: refused, naming them.
  Rng rng(3);
  siam::nn::Sequential<float, Cpu> plain;
  plain.add<siam::nn::Dense<float, Cpu>>(8, 16, rng).add<siam::nn::BatchNorm<float, Cpu>>(16);
  siam::TrainingState st = first.trainer.state();
  CHECK(st.streams.size() == 2);
  siam::optim::Adam<float, Cpu> adam(plain.parameters(), {1e-2, 0.9, 0.99, 1e-8});
  siam::Trainer<float, Cpu> other(plain, adam, first.source,
                                  siam::losses::contrastive<float, Cpu>({0.5}));
  CHECK_THROWS_WITH_AS(other.restore(st), doctest::Contains("2 random stream words"),
                       siam::value_error);
  fs::remove(ck);
}

TEST_CASE("TrainingState packs into 8 words and back") {
  siam::TrainingState s;
  Rng rng(5);
  (void)rng.normal();  // leaves a spare normal
  s.rng = rng.state();
  s.optimizer_steps = 123456789012LL;
  s.iteration = 42;
  const auto w = s.pack();
  const siam::TrainingState back = siam::TrainingState::unpack(w.data());
  for (int i = 0; i < 4; ++i)
    CHECK(back.rng.s[i] == s.rng.s[i]);
  CHECK(back.rng.has_spare == s.rng.has_spare);
  CHECK(back.rng.spare == s.rng.spare);
  CHECK(back.optimizer_steps == s.optimizer_steps);
  CHECK(back.iteration == s.iteration);
}

namespace {
// An MLP trainer whose loss is multiplied by a scale the test can set to NaN.
struct ScaledRun {
  siam::data::Dataset data = clusters(60, 8, {0, 1}, 41);
  siam::ImageSet<float, Cpu> set{data};
  Rng rng{42};
  siam::nn::Sequential<float, Cpu> net = siam::nn::mlp<float, Cpu>({8, 16, 2}, rng);
  siam::optim::Adam<float, Cpu> adam{net.parameters(), {1e-2, 0.9, 0.99, 1e-8}};
  siam::PairBatches<float, Cpu> source{set, 8, 43};
  Tensor scale = Tensor::from(Shape{1}, {1.0f});
  siam::Trainer<float, Cpu> trainer;
  explicit ScaledRun(siam::TrainerOptions o)
      : trainer(
            net, adam, source,
            [this](siam::Var<float, Cpu> f, const siam::Batch<float, Cpu>&,
                   siam::Tape<float, Cpu>& tape) {
              return sum(square(f)) * broadcast_scalar(tape.constant(scale), Shape{1});
            },
            std::move(o)) {}
  std::vector<std::vector<float>> weights() {
    std::vector<std::vector<float>> out;
    for (auto* p : net.parameters())
      out.push_back(p->value.to_vector());
    return out;
  }
};
}  // namespace

TEST_CASE("non-finite policy: stop throws before the update, skip uses up the iteration") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SUBCASE("stop (the default)") {
    ScaledRun r({});
    r.trainer.step();
    r.trainer.step();
    const auto before = r.weights();
    r.scale[0] = nan;
    CHECK_THROWS_WITH_AS(r.trainer.step(), doctest::Contains("iteration 3"), siam::numeric_error);
    CHECK(r.trainer.iteration() == 2);
    CHECK(r.adam.steps() == 2);
    CHECK(r.weights() == before);
  }
  SUBCASE("skip, eager and graph mode") {
    for (const bool graph : {false, true}) {
      CAPTURE(graph);
      siam::TrainerOptions o;
      o.graph = graph;
      o.on_non_finite = siam::NonFinite::skip;
      o.max_skips_in_a_row = 2;
      ScaledRun r(o);
      ScaledRun ref(o);  // the same run without the bad batch's update
      for (int s = 0; s < 2; ++s) {
        CHECK(std::isfinite(r.trainer.step()));
        ref.trainer.step();
        CHECK_FALSE(r.trainer.last_skipped());
      }
      const auto before = r.weights();
      r.scale[0] = nan;
      CHECK(std::isnan(r.trainer.step()));
      CHECK(r.trainer.last_skipped());
      CHECK(r.trainer.last_skip_reason().find("iteration 3") != std::string::npos);
      CHECK(r.trainer.skipped_steps() == 1);
      CHECK(r.trainer.iteration() == 3);  // the batch is used up
      CHECK(r.adam.steps() == 2);         // no update counted
      CHECK(r.weights() == before);
      r.scale[0] = 1.0f;
      CHECK(std::isfinite(r.trainer.step()));
      CHECK_FALSE(r.trainer.last_skipped());
      CHECK(r.adam.steps() == 3);
      CHECK(r.weights() != before);
      // The reference draws the skipped batch too, then updates once: the same weights.
      siam::Batch<float, Cpu> drawn;
      ref.source.next(drawn);
      ref.trainer.set_iteration(3);
      ref.trainer.step();
      CHECK(r.weights() == ref.weights());
      // Past max_skips_in_a_row steps in a row: stop.
      r.scale[0] = nan;
      r.trainer.step();
      r.trainer.step();
      CHECK_THROWS_WITH_AS(r.trainer.step(), doctest::Contains("3 steps in a row"),
                           siam::numeric_error);
      CHECK(r.trainer.skipped_steps() == 3);
    }
  }
  siam::TrainerOptions bad;
  bad.max_skips_in_a_row = -1;
  CHECK_THROWS_AS(ScaledRun{bad}, siam::value_error);
}

TEST_CASE("io::is_model_file: model files and checkpoints with a description, not weights alone") {
  BnRun r(7);
  const fs::path model = temp("kind_model.siam"), weights = temp("kind_weights.siam"),
                 bare = temp("kind_bare.siam"), described = temp("kind_described.siam");
  siam::io::save_model(model, r.net);
  siam::io::save_model(weights, r.net.parameters());  // format 1: weights only
  r.trainer.save_checkpoint(bare, {});
  r.trainer.save_checkpoint(described, {}, siam::io::model_records(r.net));
  CHECK(siam::io::is_model_file(model));
  CHECK_FALSE(siam::io::is_model_file(weights));
  CHECK_FALSE(siam::io::is_model_file(bare));
  CHECK(siam::io::is_model_file(described));
  CHECK(siam::io::is_model_file(siam::io::load_archive(described)));
  CHECK_THROWS_AS(siam::io::is_model_file(temp("kind_missing.siam")), siam::io_error);
  for (const auto& p : {model, weights, bare, described})
    fs::remove(p);
}

TEST_CASE("loss_kinds: one table for names, margins and batch sizes") {
  CHECK(siam::loss_kind_names() == "contrastive, triplet, batch-hard, batch-all or ntxent");
  siam::SiameseConfig cfg;
  cfg.margin = 0;
  CHECK_THROWS_WITH_AS(cfg.validate(), doctest::Contains("> 0 for the contrastive loss"),
                       siam::value_error);
  for (const auto& k : siam::loss_kinds) {
    CAPTURE(std::string(k.name));
    cfg.loss = k.name;
    cfg.batch_pairs = 180;
    cfg.margin = 0;
    if (k.margin == siam::LossKind::Margin::positive)
      CHECK_THROWS_AS(cfg.validate(), siam::value_error);
    else
      CHECK_NOTHROW(cfg.validate());  // 0: the triplet losses ask only for the right order
    cfg.margin = -0.1;
    if (k.margin == siam::LossKind::Margin::unused)
      CHECK_NOTHROW(cfg.validate());
    else
      CHECK_THROWS_AS(cfg.validate(), siam::value_error);
    cfg.margin = 0.3;
    cfg.batch_pairs = k.min_batch_pairs - 1;
    CHECK_THROWS_AS(cfg.validate(), siam::value_error);
    cfg.batch_pairs = k.min_batch_pairs;
    CHECK_NOTHROW(cfg.validate());
  }
  cfg.loss = "hinge";
  CHECK_THROWS_WITH_AS(cfg.validate(),
                       "loss 'hinge': expected contrastive, triplet, batch-hard, "
                       "batch-all or ntxent",
                       siam::value_error);
  CHECK(siam::io::json_escape("a\"b\\c\n\x01 é") == "a\\\"b\\\\c\\u000a\\u0001 é");
}
