// Data-parallel training through the library's trainer (siam/parallel/trainer.hpp) on one
// process: the batch layouts and slice_batch, the trainer's gradient-step hook, the
// one-rank data-parallel run against the plain trainer (bit-identical by default; losses
// within 1e-12 and weights 1e-7 in double with uneven deterministic blocks, for a summed and a
// mean-reduced loss), checkpoints through rank 0, and the refusals. The 2-rank runs are in
// test_example_mpi.sh (mnist_siamese under mpirun).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <numeric>

#include "siam/parallel/trainer.hpp"
#include "siam/siamese.hpp"

using namespace siam;
using T = double;
using B = Cpu;

namespace {

// 60 random 8-pixel images of 4 classes.
ImageSet<T, B> small_set() {
  Rng rng(7);
  std::vector<float> px(60 * 8);
  for (auto& v : px)
    v = static_cast<float>(rng.normal());
  std::vector<std::int64_t> labels(60);
  for (std::size_t i = 0; i < labels.size(); ++i)
    labels[i] = static_cast<std::int64_t>(i % 4);
  return ImageSet<T, B>(px, labels, Shape{8});
}

// A network, Adam, a source and a loss: one trainer's worth of state.
struct Setup {
  explicit Setup(const ImageSet<T, B>& set, bool triplets = false, std::size_t n = 10)
      : rng(3),
        net(nn::mlp<T, B>({8, 6, 3}, rng)),
        adam(net.parameters(), optim::AdamOptions{1e-2, 0.9, 0.99, 1e-8}),
        pairs(set, n, 11),
        trip(set, n, 11),
        trainer(net, adam, triplets ? static_cast<BatchSource<T, B>&>(trip) : pairs,
                triplets ? losses::triplet<T, B>({0.5, Distance::euclidean, Reduction::mean})
                         : losses::contrastive<T, B>({0.3, Reduction::sum, false, false})) {}
  std::vector<T> weights() {
    std::vector<T> w;
    for (auto* p : net.parameters())
      for (index_t i = 0; i < p->value.size(); ++i)
        w.push_back(p->value.data()[i]);
    return w;
  }
  Rng rng;
  nn::Sequential<T, B> net;
  optim::Adam<T, B> adam;
  PairBatches<T, B> pairs;
  TripletBatches<T, B> trip;
  Trainer<T, B> trainer;
};

double max_rel(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(a[i])));
  return m;
}

}  // namespace

TEST_CASE("batch sources state their stacked layout") {
  const auto set = small_set();
  CHECK(PairBatches<T, B>(set, 5, 1).layout()->blocks == 2);
  CHECK(PairBatches<T, B>(set, 5, 1).layout()->items == 5);
  CHECK(PositivePairBatches<T, B>(set, 5, 1).layout()->blocks == 2);
  CHECK(TripletBatches<T, B>(set, 4, 1).layout()->blocks == 3);
  CHECK(TripletBatches<T, B>(set, 4, 1).layout()->items == 4);
  CHECK_FALSE(PKBatches<T, B>(set, 2, 3, 1).layout().has_value());
}

TEST_CASE("slice_batch keeps each block's rows, the targets and the labels of the items") {
  // 3 items, 2 blocks: row r holds the value r in each of its 2 columns.
  Batch<T, B> full;
  full.inputs = Tensor<T, B>::from(Shape{6, 2}, std::vector<T>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5});
  full.targets = Tensor<T, B>::from(Shape{3}, std::vector<T>{1, 0, 1});
  full.labels = {10, 11, 12, 13, 14, 15};
  Batch<T, B> part;
  slice_batch(full, {2, 3}, 1, 3, part);
  CHECK(part.inputs.shape() == Shape{4, 2});
  CHECK(part.inputs.to_vector() == std::vector<T>{1, 1, 2, 2, 4, 4, 5, 5});
  CHECK(part.targets.to_vector() == std::vector<T>{0, 1});
  CHECK(part.labels == std::vector<std::int64_t>{11, 12, 14, 15});
  slice_batch(full, {2, 3}, 2, 2, part);  // empty
  CHECK(part.inputs.rows() == 0);
  CHECK(part.targets.size() == 0);
  slice_batch(full, {1, 6}, 0, 6, part);  // one block: the whole batch
  CHECK(part.inputs.to_vector() == full.inputs.to_vector());

  CHECK_THROWS_AS(slice_batch(full, {2, 3}, 2, 4, part), shape_error);  // past the items
  CHECK_THROWS_AS(slice_batch(full, {2, 3}, 2, 1, part), shape_error);  // reversed
  CHECK_THROWS_AS(slice_batch(full, {3, 3}, 0, 1, part), shape_error);  // 6 rows are not 3 x 3
  CHECK_THROWS_AS(slice_batch(full, {0, 3}, 0, 1, part), shape_error);
  CHECK_THROWS_WITH_AS(slice_batch(full, {4, 3}, 0, 1, part),
                       "slice_batch: a batch of 6 rows is not 4 blocks of 3 items", shape_error);
}

TEST_CASE("forward_backward scales the loss and the gradients; the gradient-step hook") {
  const auto set = small_set();
  Setup a(set), b(set);
  Batch<T, B> batch;
  a.pairs.next(batch);
  const T la = a.trainer.forward_backward(batch).value().item();
  const T lb = b.trainer.forward_backward(batch, T(2)).value().item();
  CHECK(lb == 2 * la);  // a power of two: exact
  for (std::size_t i = 0; i < a.net.parameters().size(); ++i) {
    const auto& g = a.net.parameters()[i]->gradient();
    Tensor<T, B> twice(g.shape());
    twice = g * T(2);
    CHECK(b.net.parameters()[i]->gradient().to_vector() == twice.to_vector());
  }

  // A hook that reports a fixed loss: last_loss() reads what it returns.
  Tensor<T, B> fixed = Tensor<T, B>::from(Shape{1}, std::vector<T>{42});
  int calls = 0;
  a.trainer.set_gradient_step([&](const Batch<T, B>& full) {
    ++calls;
    (void)a.trainer.forward_backward(full);
    return fixed.view();
  });
  CHECK(a.trainer.step() == 42);
  CHECK(calls == 1);
  a.trainer.set_gradient_step({});
  CHECK(a.trainer.step() != 42);
  CHECK(calls == 1);
}

TEST_CASE("one-rank data-parallel trainer: bit-identical by default, close with blocks") {
  const auto set = small_set();
  for (bool triplets : {false, true}) {
    CAPTURE(triplets);
    Setup plain(set, triplets), dflt(set, triplets), det(set, triplets);
    parallel::LocalCommunicator comm;
    const Reduction r = triplets ? Reduction::mean : Reduction::sum;
    parallel::DataParallelTrainer<T, B> d1(dflt.trainer, comm, {{}, r});
    parallel::DataParallelTrainer<T, B> d2(det.trainer, comm,
                                           {{true, 3, 0}, r});  // 10 items: 3, 3, 4
    std::vector<T> lp, l1, l2;
    for (int s = 0; s < 12; ++s) {
      lp.push_back(plain.trainer.step());
      l1.push_back(dflt.trainer.step());
      l2.push_back(det.trainer.step());
    }
    CHECK(l1 == lp);
    CHECK(dflt.weights() == plain.weights());
    // Without the mean's scaling the triplet loss would be about 3x (three blocks).
    CHECK(max_rel(l2, lp) < 1e-12);
    // Adam turns the rounding noise of the last bias's gradient (exactly zero in exact
    // arithmetic: a shift of every embedding changes no distance) into lr-sized steps, so
    // the weights agree less closely than the losses (measured 5e-9 and 3e-10).
    CHECK(max_rel(det.weights(), plain.weights()) < 1e-7);
  }
}

TEST_CASE("data-parallel checkpoints resume exactly, through rank 0") {
  const auto set = small_set();
  const auto path = std::filesystem::temp_directory_path() / "siam_dist_trainer_ck.siam";
  parallel::LocalCommunicator comm;
  Setup ref(set), first(set), second(set);
  parallel::DataParallelTrainer<T, B> dref(ref.trainer, comm, {{true, 4, 0}, Reduction::sum});
  parallel::DataParallelTrainer<T, B> dfirst(first.trainer, comm, {{true, 4, 0}, Reduction::sum});
  parallel::DataParallelTrainer<T, B> dsecond(second.trainer, comm, {{true, 4, 0}, Reduction::sum});
  std::vector<float> losses;
  for (int s = 0; s < 10; ++s)
    (void)ref.trainer.step();
  for (int s = 0; s < 5; ++s)
    losses.push_back(static_cast<float>(first.trainer.step()));
  dfirst.save_checkpoint(path, losses);
  CHECK(dsecond.load_checkpoint(path) == losses);
  CHECK(second.trainer.iteration() == 5);
  for (int s = 0; s < 5; ++s)
    (void)second.trainer.step();
  CHECK(second.weights() == ref.weights());
  std::filesystem::remove(path);
  // A missing file: the trainer's error, unchanged.
  CHECK_THROWS_AS(dsecond.load_checkpoint(path), io_error);
}

TEST_CASE("data-parallel training refuses what it cannot split") {
  const auto set = small_set();
  SiameseConfig cfg;
  for (const char* loss : {"batch-hard", "batch-all", "ntxent"}) {
    cfg.loss = loss;
    CHECK_THROWS_WITH_AS(parallel::options_for(cfg),
                         doctest::Contains("couples every example of a batch"), value_error);
  }
  cfg.loss = "contrastive";
  cfg.reduction = Reduction::mean;
  CHECK(parallel::options_for(cfg).reduction == Reduction::mean);
  cfg.loss = "triplet";
  CHECK(parallel::options_for(cfg).reduction == Reduction::mean);

  Rng rng(1);
  auto net = nn::mlp<T, B>({8, 4}, rng);
  optim::Adam<T, B> adam(net.parameters());
  PKBatches<T, B> pk(set, 2, 3, 1);
  Trainer<T, B> t(net, adam, pk, losses::batch_hard<T, B>());
  parallel::LocalCommunicator comm;
  auto wrap = [&] { parallel::DataParallelTrainer<T, B> d(t, comm); };
  CHECK_THROWS_WITH_AS(
      wrap(), doctest::Contains("'pk p=2 k=3' does not say how its rows are stacked"), value_error);
}
