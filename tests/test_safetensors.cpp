// safetensors: round trips (float and double), PyTorch's layout and names, atomic writes,
// and every malformed or mismatched header field rejected with a message naming it.
#include <doctest/doctest.h>

#include <siam/io/safetensors.hpp>
#include <siam/siamese.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>

namespace fs = std::filesystem;
using siam::Cpu;

namespace {

fs::path temp_dir() {
  const fs::path d = fs::temp_directory_path() / ("siam-safetensors-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

std::vector<std::uint8_t> bytes_of(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> b;
  siam::io::detail::put<std::uint64_t>(b, header.size());
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

std::string error_of(const std::vector<std::uint8_t>& b) {
  try {
    (void)siam::io::decode_safetensors(b.data(), b.size(), "f.safetensors");
  } catch (const siam::io_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("round trip and PyTorch layout") {
  const auto dir = temp_dir();
  siam::Rng rng(3);
  auto net = siam::nn::mlp<float, Cpu>({5, 4, 3}, rng);
  // Non-zero biases, so a swapped weight/bias would show.
  for (auto* p : net.parameters())
    if (p->name == "b") {
      std::vector<float> v(static_cast<std::size_t>(p->value.size()));
      for (std::size_t k = 0; k < v.size(); ++k)
        v[k] = 0.5f * static_cast<float>(k) - 1.0f;
      Cpu::from_host(p->value.data(), v.data(), p->value.size());
    }
  const fs::path f = dir / "m.safetensors";
  siam::io::save_safetensors(f, net, {{"note", "a \"quoted\" value"}});
  const auto raw = siam::io::read_file(f, "test");
  CHECK((raw.size() - 8 - std::uint64_t{raw[0]} - (std::uint64_t{raw[1]} << 8)) ==
        4u * (20 + 4 + 12 + 3));
  CHECK((8 + raw[0] + (raw[1] << 8)) % 8 == 0);  // data 8-byte aligned
  const auto file = siam::io::decode_safetensors(raw.data(), raw.size(), f.string());
  REQUIRE(file.tensors.size() == 4);
  CHECK(file.metadata.at("note") == "a \"quoted\" value");
  CHECK(file.metadata.at("format") == "pt");
  CHECK(file.metadata.at("architecture") == net.describe());
  const auto& w0 = file.tensors[0];
  CHECK(w0.name == "layers.0.weight");
  CHECK(w0.dims == std::vector<std::int64_t>{4, 5});      // [out x in]
  const auto w = net.parameters()[0]->value.to_vector();  // [in x out]
  const auto wt = w0.as<float>();
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 4; ++c)
      CHECK(wt[c * 5 + r] == w[r * 4 + c]);
  CHECK(file.tensors[1].name == "layers.0.bias");
  CHECK(file.tensors[2].name == "layers.2.weight");  // the ReLU counts as layer 1
  CHECK(file.tensors[3].name == "layers.2.bias");

  siam::Rng rng2(99);
  auto other = siam::nn::mlp<float, Cpu>({5, 4, 3}, rng2);
  siam::io::load_safetensors(f, other);
  for (std::size_t i = 0; i < 4; ++i)
    CHECK(other.parameters()[i]->value.to_vector() == net.parameters()[i]->value.to_vector());
  CHECK(fs::directory_iterator(dir) != fs::directory_iterator());
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);

  // Double networks write F64; a float network refuses them with both dtypes named.
  siam::Rng rng3(5);
  auto dnet = siam::nn::mlp<double, Cpu>({5, 4, 3}, rng3);
  siam::io::save_safetensors(dir / "d.safetensors", dnet);
  auto dnet2 = siam::nn::mlp<double, Cpu>({5, 4, 3}, rng);
  siam::io::load_safetensors(dir / "d.safetensors", dnet2);
  CHECK(dnet2.parameters()[2]->value.to_vector() == dnet.parameters()[2]->value.to_vector());
  CHECK_THROWS_WITH_AS(siam::io::load_safetensors(dir / "d.safetensors", other),
                       doctest::Contains("has dtype F64, the network needs F32"), siam::io_error);

  // Another shape, a missing tensor, an extra tensor: named, and nothing is changed.
  auto wide = siam::nn::mlp<float, Cpu>({5, 6, 3}, rng);
  const auto before = wide.parameters()[0]->value.to_vector();
  CHECK_THROWS_WITH_AS(
      siam::io::load_safetensors(f, wide),
      doctest::Contains("'layers.0.weight' has shape [4, 5], the network expects [6, 5]"),
      siam::io_error);
  CHECK(wide.parameters()[0]->value.to_vector() == before);
  auto deeper = siam::nn::mlp<float, Cpu>({5, 4, 3, 2}, rng);
  CHECK_THROWS_WITH_AS(siam::io::load_safetensors(f, deeper),
                       doctest::Contains("lacks the tensor 'layers.4.weight'"), siam::io_error);
  auto shallow = siam::nn::mlp<float, Cpu>({5, 4}, rng);
  CHECK_THROWS_WITH_AS(siam::io::load_safetensors(f, shallow),
                       doctest::Contains("holds the tensor 'layers.2."), siam::io_error);

  // Unwritable destination: io_error naming it, no file.
  CHECK_THROWS_AS(siam::io::save_safetensors(dir / "no" / "such" / "dir.safetensors", net),
                  siam::io_error);
  CHECK_THROWS_AS(siam::io::load_safetensors(dir / "missing.safetensors", net), siam::io_error);
  fs::remove_all(dir);
}

TEST_CASE("a CNN's tensors carry PyTorch's names; siam's older W / b names still load") {
  const auto dir = temp_dir();
  siam::Rng rng(7);
  using namespace siam::nn;
  Sequential<float, Cpu> net;
  net.add<Conv2D<float, Cpu>>(1, 2, 3, rng);
  net.add<ReLU<float, Cpu>>();
  net.add<Conv2D<float, Cpu>>(2, 2, 1, rng, 1, 0, false);  // no bias: weight only
  net.add<Flatten<float, Cpu>>();
  net.add<Dense<float, Cpu>>(8, 3, rng);
  net.set_input_shape(siam::Shape{1, 4, 4});
  for (auto* p : net.parameters()) {  // distinct values everywhere
    std::vector<float> v(static_cast<std::size_t>(p->value.size()));
    for (std::size_t k = 0; k < v.size(); ++k)
      v[k] = 0.25f * static_cast<float>(k) - 0.5f + static_cast<float>(p->value.size()) * 0.01f;
    Cpu::from_host(p->value.data(), v.data(), p->value.size());
  }
  const fs::path f = dir / "cnn.safetensors";
  siam::io::save_safetensors(f, net);
  const auto raw = siam::io::read_file(f, "test");
  const auto file = siam::io::decode_safetensors(raw.data(), raw.size(), f.string());
  std::vector<std::string> names;
  for (const auto& t : file.tensors)
    names.push_back(t.name);
  CHECK(names == std::vector<std::string>{"layers.0.weight", "layers.0.bias", "layers.2.weight",
                                          "layers.4.weight", "layers.4.bias"});
  // Conv2d's layout is siam's: [O x C x K x K], values as they are.
  CHECK(file.tensors[0].dims == std::vector<std::int64_t>{2, 1, 3, 3});
  CHECK(file.tensors[0].as<float>() == net.parameters()[0]->value.to_vector());
  CHECK(file.tensors[3].dims == std::vector<std::int64_t>{3, 8});  // Linear: [out x in]

  Sequential<float, Cpu> back;
  siam::Rng rng2(8);
  back.add<Conv2D<float, Cpu>>(1, 2, 3, rng2);
  back.add<ReLU<float, Cpu>>();
  back.add<Conv2D<float, Cpu>>(2, 2, 1, rng2, 1, 0, false);
  back.add<Flatten<float, Cpu>>();
  back.add<Dense<float, Cpu>>(8, 3, rng2);
  siam::io::load_safetensors(f, back);
  for (std::size_t i = 0; i < 5; ++i)
    CHECK(back.parameters()[i]->value.to_vector() == net.parameters()[i]->value.to_vector());

  // A file of the older naming (Conv2D as layers.<i>.W / .b) loads the same values.
  auto records = siam::io::state_dict(net);
  for (auto& r : records)
    if (r.name.rfind("layers.0.", 0) == 0 || r.name.rfind("layers.2.", 0) == 0)
      r.name = r.name.substr(0, 9) + (r.name.ends_with("weight") ? "W" : "b");
  const fs::path old = dir / "old.safetensors";
  siam::io::write_file_atomic(old, siam::io::encode_safetensors(records, {}));
  Sequential<float, Cpu> again;
  siam::Rng rng3(9);
  again.add<Conv2D<float, Cpu>>(1, 2, 3, rng3);
  again.add<ReLU<float, Cpu>>();
  again.add<Conv2D<float, Cpu>>(2, 2, 1, rng3, 1, 0, false);
  again.add<Flatten<float, Cpu>>();
  again.add<Dense<float, Cpu>>(8, 3, rng3);
  siam::io::load_safetensors(old, again);
  for (std::size_t i = 0; i < 5; ++i)
    CHECK(again.parameters()[i]->value.to_vector() == net.parameters()[i]->value.to_vector());
  fs::remove_all(dir);
}

TEST_CASE("1x1 and empty tensors round trip through encode/decode") {
  const float one = 3.5f;
  const std::vector<siam::io::Record> recs = {siam::io::make_record("a", {1, 1}, &one, 1),
                                              siam::io::make_record<float>("e", {0, 3}, nullptr, 0),
                                              siam::io::make_record("s", {}, &one, 1)};
  const auto b = siam::io::encode_safetensors(recs);
  const auto f = siam::io::decode_safetensors(b.data(), b.size(), "x");
  REQUIRE(f.tensors.size() == 3);
  CHECK(f.tensors[0].as<float>() == std::vector<float>{3.5f});
  CHECK(f.tensors[1].dims == std::vector<std::int64_t>{0, 3});
  CHECK(f.tensors[1].bytes.empty());
  CHECK(f.tensors[2].dims.empty());
  const auto empty = siam::io::encode_safetensors({});
  CHECK(siam::io::decode_safetensors(empty.data(), empty.size(), "x").tensors.empty());
}

TEST_CASE("hostile headers") {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(error_of(bytes_of(ok, 8)).empty());
  CHECK(error_of({1, 2, 3}).find("only 3 bytes") != std::string::npos);
  // A huge header length: refused by comparing with the file size, nothing allocated.
  auto huge = bytes_of(ok, 8);
  for (int i = 0; i < 8; ++i)
    huge[i] = 0xff;
  CHECK(error_of(huge).find("header length 18446744073709551615 exceeds the file") !=
        std::string::npos);
  struct Case {
    std::string header;
    std::size_t data;
    const char* expect;
  };
  const Case cases[] = {
      {ok, 12, "cover 8 of the 12 data bytes"},
      {ok, 4, "outside the 4 data bytes"},
      {R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4, "dtype 'F16'"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "hold 8 bytes, its shape [3]"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "data_offsets [8, 0]"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "a gap"},
      {R"({"a":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}})", 4, "rank 5"},
      {R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})", 4,
       "impossible shape"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4, "fraction"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4, "unknown field 'x'"},
      {R"({"a":{"dtype":"F32","shape":[1]}})", 4, "lacks data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{}})", 4, "appears twice"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4, "must hold 2 integers"},
      {R"({"__metadata__":{"k":1}})", 0, "expected '\"'"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x)", 4, "unexpected characters"},
      {R"({"a":{"dtype":"F32)", 4, "unterminated string"},
      {R"([1,2])", 0, "does not start with '{'"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.header);
    const auto e = error_of(bytes_of(c.header, c.data));
    CHECK(e.find(c.expect) != std::string::npos);
    CHECK(e.find("f.safetensors") != std::string::npos);
  }
  // Trailing spaces (the writer's alignment padding) and escapes are fine.
  const auto padded =
      bytes_of(R"({"\u0061\n":{"dtype":"U64","shape":[],"data_offsets":[0,8]}}   )", 8);
  CHECK(error_of(padded).empty());
  // Deeply nested input cannot recurse: the parser only accepts the schema's depth.
  CHECK_FALSE(error_of(bytes_of(std::string(10000, '{'), 0)).empty());
}

TEST_CASE("BatchNorm and residual buffers: torchvision's names, an I64 batch count") {
  const auto dir = temp_dir();
  siam::Rng rng(5);
  // A stem, one projected basic block, pooling and a head: every kind of name.
  auto specs = siam::nn::resnet_specs(siam::Shape{1, 6, 6}, 2, 3);
  specs.resize(3);  // conv, BN, ReLU
  siam::nn::detail::basic_block(specs, 2, 4, 2);
  specs.push_back({"GlobalAvgPool", {}});
  specs.push_back(siam::nn::LayerSpec{"Dense", {}}.set("in", 4).set("out", 3));
  auto net = siam::nn::build<float, Cpu>(specs, siam::Shape{1, 6, 6}, rng);
  // Non-trivial running statistics and count: train on two batches.
  std::vector<float> x(2 * 36);
  for (std::size_t k = 0; k < x.size(); ++k)
    x[k] = static_cast<float>((k * 7) % 11) * 0.3f - 1.0f;
  for (int step = 0; step < 2; ++step) {
    siam::Tape<float, Cpu> t;
    const auto xt =
        siam::Tensor<float, Cpu>::from(siam::Shape{2, 1, 6, 6}, std::span<const float>(x));
    (void)net.forward(t.constant(xt));
  }
  const fs::path f = dir / "bn.safetensors";
  siam::io::save_safetensors(f, net);
  const auto raw = siam::io::read_file(f, "test");
  const auto file = siam::io::decode_safetensors(raw.data(), raw.size(), f.string());
  std::map<std::string, const siam::io::Record*> by;
  for (const auto& r : file.tensors)
    by[r.name] = &r;
  for (const char* n :
       {"layers.0.weight", "layers.1.weight", "layers.1.bias", "layers.1.running_mean",
        "layers.1.running_var", "layers.1.num_batches_tracked", "layers.3.body.0.weight",
        "layers.3.body.4.running_var", "layers.3.projection.0.weight",
        "layers.3.projection.1.num_batches_tracked", "layers.6.weight", "layers.6.bias"}) {
    CAPTURE(n);
    CHECK(by.count(n) == 1);
  }
  CHECK(file.tensors.size() == 1 + 5 + (1 + 5 + 1 + 5 + 1 + 5) + 2);
  const auto& count = *by.at("layers.3.projection.1.num_batches_tracked");
  CHECK(count.type == siam::io::ArrayType::i64);
  CHECK(count.dims.empty());
  CHECK(count.as<std::int64_t>() == std::vector<std::int64_t>{2});
  CHECK(by.at("layers.1.running_mean")->as<float>() ==
        dynamic_cast<siam::nn::BatchNorm<float, Cpu>&>(net[1]).running_mean().to_vector());

  // Back into a fresh network: parameters and buffers alike.
  siam::Rng rng2(6);
  auto back = siam::nn::build<float, Cpu>(specs, siam::Shape{1, 6, 6}, rng2);
  siam::io::load_safetensors(f, back);
  const auto a = net.state(), b = back.state();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK(a[i]->value.to_vector() == b[i]->value.to_vector());

  // A file without the buffers (strict, like PyTorch), with a float count or a negative one.
  const auto without = [&](const std::string& name) {
    auto recs = file.tensors;
    recs.erase(std::remove_if(recs.begin(), recs.end(),
                              [&](const siam::io::Record& r) { return r.name == name; }),
               recs.end());
    return recs;
  };
  const auto load_error = [&](const std::vector<siam::io::Record>& recs) {
    const fs::path g = dir / "bad.safetensors";
    siam::io::write_file_atomic(g, siam::io::encode_safetensors(recs));
    try {
      siam::io::load_safetensors(g, back);
    } catch (const siam::io_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(
      load_error(without("layers.1.running_var")).find("lacks the tensor 'layers.1.running_var'") !=
      std::string::npos);
  auto float_count = file.tensors;
  const float one = 1.0f;
  for (auto& r : float_count)
    if (r.name == "layers.1.num_batches_tracked") r = siam::io::make_record(r.name, {}, &one, 1);
  CHECK(load_error(float_count).find("has dtype F32, the network needs I64") != std::string::npos);
  auto negative = file.tensors;
  for (auto& r : negative)
    if (r.name == "layers.1.num_batches_tracked") {
      const std::int64_t m = -3;
      r = siam::io::make_record(r.name, {}, &m, 1);
      r.type = siam::io::ArrayType::i64;
    }
  CHECK(load_error(negative).find("counts -3 batches") != std::string::npos);
  fs::remove_all(dir);
}
