// A downstream program, as a user would write it against the installed package:
//  1. the README's "Using the library" loop (a Siamese MLP, contrastive loss, Adam);
//  2. the general trainer on 3-class data with its own label values: a 20-64-64-3 network,
//     batch-hard triplet loss on P x K batches, AdamW with a cosine schedule; then the model
//     is saved, loaded back as a ready network and used to embed new inputs.
#include <cstdio>
#include <filesystem>
#include <siam/siamese.hpp>
#include <siam/train/trainer.hpp>
#include <vector>

using namespace siam;

static int readme_loop() {
  Rng rng(1);
  auto net = nn::mlp<float, Cpu>({8, 16, 2}, rng);
  optim::Adam<float, Cpu> adam(net.parameters(), {1e-2});
  Tensor<float, Cpu> x(Shape{16, 8}), y(Shape{8});
  for (index_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(rng.uniform(-1, 1));
  for (index_t i = 0; i < 8; ++i)
    y[i] = static_cast<float>(i % 2);
  Tape<float, Cpu> tape;
  float first = 0, last = 0;
  for (int it = 0; it < 50; ++it) {
    tape.reset();
    adam.zero_grad();
    auto f = net.forward(tape.constant(x));
    auto loss = contrastive_loss(slice_rows(f, 0, 8), slice_rows(f, 8, 8), tape.constant(y), {1.0});
    tape.backward(loss);
    adam.step();
    (it == 0 ? first : last) = loss.value().item();
  }
  std::printf("downstream: README loop, loss %.4f -> %.4f\n", first, last);
  return last < first ? 0 : 1;
}

static int general_trainer() {
  // 300 points of 20 features around three centres, labelled 10, 20 and 30.
  Rng rng(2);
  std::vector<float> images;
  std::vector<std::int64_t> labels;
  std::vector<std::vector<float>> centre(3, std::vector<float>(20));
  for (auto& c : centre)
    for (auto& v : c)
      v = static_cast<float>(rng.uniform(-1, 1));
  for (std::size_t i = 0; i < 300; ++i) {
    labels.push_back(static_cast<std::int64_t>(10 * (i % 3 + 1)));
    for (std::size_t k = 0; k < 20; ++k)
      images.push_back(centre[i % 3][k] + static_cast<float>(rng.normal(0, 0.3)));
  }
  ImageSet<float, Cpu> set(images, labels, Shape{20});
  auto net = nn::mlp<float, Cpu>({20, 64, 64, 3}, rng);
  optim::AdamW<float, Cpu> opt(net.parameters(), {1e-2, 0.9, 0.999, 1e-8, 1e-4});
  PKBatches<float, Cpu> source(set, 3, 16, 7);
  TrainerOptions options;
  options.schedule = optim::CosineLR(1e-2, 200, 0, 10);
  Trainer<float, Cpu> trainer(net, opt, source, losses::batch_hard<float, Cpu>({0.5}), options);
  double first = 0, last = 0;
  for (int it = 0; it < 200; ++it)
    (it == 0 ? first : last) = trainer.step();
  std::printf("downstream: general trainer, batch-hard loss %.4f -> %.4f\n", first, last);

  const auto path = std::filesystem::temp_directory_path() / "siam_downstream_model.siam";
  io::save_model(path, net);
  auto loaded = io::load_model<float, Cpu>(path);
  std::filesystem::remove(path);
  // new inputs: one point at each centre
  Tensor<float, Cpu> fresh(Shape{3, 20});
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < 20; ++k)
      fresh(c, k) = centre[static_cast<std::size_t>(c)][static_cast<std::size_t>(k)];
  const auto a = net.embed(fresh).to_vector(), b = loaded.embed(fresh).to_vector();
  std::printf("downstream: loaded %s; embeddings %s\n", loaded.describe().c_str(),
              a == b ? "identical" : "DIFFER");
  return (last < first && a == b) ? 0 : 1;
}

int main() {
  return readme_loop() | general_trainer();
}
