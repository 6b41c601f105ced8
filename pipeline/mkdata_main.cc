// stoker-mkdata: writes datasets for stoker's pipelines.
//   fashion-mnist   Fashion-MNIST (IDX) -> TFRecord or WebDataset shards, PNG or JPEG
//   imagenet-like   synthetic natural-image-like JPEGs -> TFRecord, WebDataset or a folder
//   tokens          synthetic token sequences -> TFRecord shards
// TFRecord records are tf.train.Example with features "image" (bytes) and
// "label" (int64), or "tokens" (int64 list) and "label"; WebDataset samples
// are <key>.jpg|png plus <key>.cls (the label in decimal).
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>

#include "pipeline/example_codec.h"
#include "pipeline/file_util.h"
#include "pipeline/idx_file.h"
#include "pipeline/image_synth.h"
#include "pipeline/jpeg_codec.h"
#include "pipeline/png_codec.h"
#include "pipeline/random.h"
#include "pipeline/tar_shard.h"
#include "pipeline/tfrecord.h"

namespace stoker::pipeline {
namespace {

enum class Format { kTFRecord, kWebDataset, kFolder };
enum class Encoding { kPng, kJpeg };

struct Sample {
  std::string image;  // encoded
  std::string image_ext;
  std::vector<int32_t> tokens;
  int64_t label = 0;
  bool has_label = true;
};

// Writes shard `shard` of `shards` with samples [begin, end) produced by `make`.
using MakeSample = std::function<Result<Sample>(uint64_t index)>;

std::string shard_name(const std::string& prefix, uint64_t shard, uint64_t shards, Format format) {
  return fmt::format("{}-{:05d}-of-{:05d}.{}", prefix, shard, shards,
                     format == Format::kTFRecord ? "tfrecord" : "tar");
}

Status write_shard(const std::string& path, Format format, uint64_t begin, uint64_t end,
                   const MakeSample& make, std::atomic<uint64_t>& bytes) {
  if (format == Format::kTFRecord) {
    STOKER_ASSIGN_OR_RETURN(TFRecordWriter w, TFRecordWriter::create(path));
    for (uint64_t i = begin; i < end; ++i) {
      STOKER_ASSIGN_OR_RETURN(Sample s, make(i));
      const std::optional<int64_t> label =
          s.has_label ? std::optional<int64_t>(s.label) : std::nullopt;
      const std::string record = s.tokens.empty() && !s.image.empty()
                                     ? make_image_example(s.image, label)
                                     : make_tokens_example(s.tokens, label);
      bytes += record.size();
      STOKER_RETURN_IF_ERROR(w.write(record));
    }
    return w.close();
  }
  STOKER_ASSIGN_OR_RETURN(auto w, TarWriter::create(path));
  for (uint64_t i = begin; i < end; ++i) {
    STOKER_ASSIGN_OR_RETURN(Sample s, make(i));
    const std::string key = fmt::format("sample{:09d}", i);
    bytes += s.image.size();
    STOKER_RETURN_IF_ERROR(w->add(key + "." + s.image_ext, s.image));
    if (s.has_label) STOKER_RETURN_IF_ERROR(w->add(key + ".cls", std::to_string(s.label)));
  }
  return w->close();
}

// Writes `count` samples in shards of `per_shard`, `threads` shards at a time.
Status write_dataset(const std::string& dir, const std::string& prefix, Format format,
                     uint64_t count, uint64_t per_shard, unsigned threads, const MakeSample& make) {
  STOKER_RETURN_IF_ERROR(make_directories(dir));
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  Status error;
  if (format == Format::kFolder) {
    const auto work = [&] {
      for (uint64_t i = next++; i < count; i = next++) {
        Status st = [&]() -> Status {
          STOKER_ASSIGN_OR_RETURN(Sample s, make(i));
          const std::string class_dir = fmt::format("{}/{:04d}", dir, s.label);
          STOKER_RETURN_IF_ERROR(make_directories(class_dir));
          bytes += s.image.size();
          return write_file_atomic(fmt::format("{}/{:09d}.{}", class_dir, i, s.image_ext),
                                   std::as_bytes(std::span(s.image)));
        }();
        if (!st.is_ok()) {
          std::lock_guard lock(mu);
          if (error.is_ok()) error = st;
          return;
        }
      }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
    STOKER_RETURN_IF_ERROR(error);
    fmt::print("wrote {} images ({} bytes) under {}/<class>/\n", count, bytes.load(), dir);
    return Status::ok();
  }
  const uint64_t shards = (count + per_shard - 1) / per_shard;
  const auto work = [&] {
    for (uint64_t s = next++; s < shards; s = next++) {
      const std::string path = fmt::format("{}/{}", dir, shard_name(prefix, s, shards, format));
      Status st = write_shard(path, format, s * per_shard, std::min(count, (s + 1) * per_shard),
                              make, bytes);
      if (!st.is_ok()) {
        std::lock_guard lock(mu);
        if (error.is_ok()) error = st;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::min<uint64_t>(threads, shards); ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  STOKER_RETURN_IF_ERROR(error);
  fmt::print("wrote {} records in {} shards ({} payload bytes) to {}/{}-*\n", count, shards,
             bytes.load(), dir, prefix);
  return Status::ok();
}

Result<std::string> encode(Encoding encoding, const uint8_t* pixels, uint32_t w, uint32_t h,
                           uint32_t channels, int quality) {
  if (encoding == Encoding::kPng) return encode_png(pixels, w, h, channels);
  return encode_jpeg(pixels, w, h, channels, quality);
}

int fail(const Status& st) {
  fmt::print(stderr, "stoker-mkdata: {}\n", st.to_string());
  return 1;
}

}  // namespace
}  // namespace stoker::pipeline

int main(int argc, char** argv) {
  using namespace stoker::pipeline;
  using stoker::Result;
  using stoker::Status;
  CLI::App app{"stoker-mkdata: writes TFRecord / WebDataset shards for stoker's pipelines"};
  app.require_subcommand(1);
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  app.add_option("--threads", threads, "Shards written at once")->check(CLI::Range(1u, 1024u));

  const std::map<std::string, Format> formats{{"tfrecord", Format::kTFRecord},
                                              {"webdataset", Format::kWebDataset},
                                              {"folder", Format::kFolder}};
  const std::map<std::string, Encoding> encodings{{"png", Encoding::kPng},
                                                  {"jpeg", Encoding::kJpeg}};

  // fashion-mnist
  auto* fm = app.add_subcommand("fashion-mnist", "Fashion-MNIST to TFRecord or WebDataset shards");
  std::string fm_input = "/usr/share/datasets/fashion-mnist";
  std::string fm_split = "train";
  Format fm_format = Format::kTFRecord;
  Encoding fm_encoding = Encoding::kPng;
  int fm_quality = 95;
  uint64_t fm_per_shard = 10000;
  uint64_t fm_limit = 0;
  std::string fm_output;
  fm->add_option("--input", fm_input, "Directory of the IDX files")->capture_default_str();
  fm->add_option("--split", fm_split, "train or t10k (test)")
      ->check(CLI::IsMember({"train", "t10k", "test"}))
      ->capture_default_str();
  fm->add_option("--format", fm_format, "tfrecord or webdataset")
      ->transform(CLI::CheckedTransformer(std::map<std::string, Format>{
          {"tfrecord", Format::kTFRecord}, {"webdataset", Format::kWebDataset}}));
  fm->add_option("--encoding", fm_encoding, "png or jpeg")
      ->transform(CLI::CheckedTransformer(encodings));
  fm->add_option("--quality", fm_quality, "JPEG quality")->check(CLI::Range(1, 100));
  fm->add_option("--records-per-shard", fm_per_shard)
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  fm->add_option("--limit", fm_limit, "Write only the first N images (0: all)");
  fm->add_option("--output", fm_output, "Output directory")->required();

  // imagenet-like
  auto* in = app.add_subcommand("imagenet-like", "Synthetic natural-image-like JPEG shards");
  uint32_t in_width = 500, in_height = 375;
  uint64_t in_count = 1000, in_per_shard = 1000, in_seed = 0;
  uint32_t in_classes = 1000;
  int in_quality = 90;
  Format in_format = Format::kWebDataset;
  std::string in_output;
  in->add_option("--width", in_width)->check(CLI::Range(8u, 8192u))->capture_default_str();
  in->add_option("--height", in_height)->check(CLI::Range(8u, 8192u))->capture_default_str();
  in->add_option("--count", in_count)->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  in->add_option("--records-per-shard", in_per_shard)
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  in->add_option("--classes", in_classes)->check(CLI::Range(1u, 1u << 30));
  in->add_option("--quality", in_quality)->check(CLI::Range(1, 100));
  in->add_option("--seed", in_seed);
  in->add_option("--format", in_format, "tfrecord, webdataset or folder")
      ->transform(CLI::CheckedTransformer(formats));
  in->add_option("--output", in_output, "Output directory")->required();

  // tokens
  auto* tk = app.add_subcommand("tokens", "Synthetic token-sequence TFRecord shards");
  uint64_t tk_count = 10000, tk_per_shard = 10000, tk_seed = 0;
  uint32_t tk_vocab = 32000, tk_min = 1, tk_max = 512, tk_classes = 0;
  double tk_mean = 128, tk_sigma = 0.5;
  std::string tk_distribution = "lognormal";
  std::string tk_output;
  tk->add_option("--count", tk_count)->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  tk->add_option("--records-per-shard", tk_per_shard)
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  tk->add_option("--vocab-size", tk_vocab)->check(CLI::Range(1u, 1u << 31));
  tk->add_option("--min-length", tk_min);
  tk->add_option("--max-length", tk_max)->check(CLI::Range(1u, 1u << 24));
  tk->add_option("--mean-length", tk_mean, "lognormal: the median length");
  tk->add_option("--sigma", tk_sigma, "lognormal: sigma of log(length)");
  tk->add_option("--distribution", tk_distribution)
      ->check(CLI::IsMember({"fixed", "uniform", "lognormal"}));
  tk->add_option("--classes", tk_classes, "> 0: a label per sequence");
  tk->add_option("--seed", tk_seed);
  tk->add_option("--output", tk_output, "Output directory")->required();

  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  if (fm->parsed()) {
    const std::string split = fm_split == "test" ? "t10k" : fm_split;
    auto images = read_idx(fmt::format("{}/{}-images-idx3-ubyte.gz", fm_input, split));
    if (!images.is_ok()) return fail(images.status());
    auto labels = read_idx(fmt::format("{}/{}-labels-idx1-ubyte.gz", fm_input, split));
    if (!labels.is_ok()) return fail(labels.status());
    if (images->damage || labels->damage) {
      return fail(stoker::data_loss(
          fmt::format("the Fashion-MNIST files in {} are damaged: {}", fm_input,
                      images->damage ? images->damage->detail : labels->damage->detail)));
    }
    const auto& h = images->header;
    if (h.dims.size() != 3) return fail(stoker::invalid_argument("expected 28x28 gray IDX images"));
    const uint64_t n = fm_limit > 0 ? std::min<uint64_t>(fm_limit, h.dims[0]) : h.dims[0];
    const uint32_t rows = h.dims[1], cols = h.dims[2];
    const MakeSample make = [&](uint64_t i) -> Result<Sample> {
      Sample s;
      const auto* pixels =
          reinterpret_cast<const uint8_t*>(images->data.data()) + i * uint64_t{rows} * cols;
      STOKER_ASSIGN_OR_RETURN(s.image, encode(fm_encoding, pixels, cols, rows, 1, fm_quality));
      s.image_ext = fm_encoding == Encoding::kPng ? "png" : "jpg";
      s.label = static_cast<uint8_t>(labels->data[i]);
      return s;
    };
    const std::string prefix = fmt::format("fashion-mnist-{}", split == "t10k" ? "test" : "train");
    Status st = write_dataset(fm_output, prefix, fm_format, n, fm_per_shard, threads, make);
    return st.is_ok() ? 0 : fail(st);
  }
  if (in->parsed()) {
    const MakeSample make = [&](uint64_t i) -> Result<Sample> {
      Sample s;
      const auto pixels = synthesize_image(in_width, in_height, 3, mix_seed({in_seed, i}));
      STOKER_ASSIGN_OR_RETURN(s.image,
                              encode_jpeg(pixels.data(), in_width, in_height, 3, in_quality));
      s.image_ext = "jpg";
      s.label = static_cast<int64_t>(i % in_classes);
      return s;
    };
    Status st =
        write_dataset(in_output, "imagenet-like", in_format, in_count, in_per_shard, threads, make);
    return st.is_ok() ? 0 : fail(st);
  }
  if (tk->parsed()) {
    if (tk_min > tk_max) return fail(stoker::invalid_argument("--min-length exceeds --max-length"));
    const MakeSample make = [&](uint64_t i) -> Result<Sample> {
      Sample s;
      Rng rng(mix_seed({tk_seed, static_cast<uint64_t>(RandomPurpose::kData), i}));
      uint32_t length = tk_max;
      if (tk_distribution == "uniform") {
        length = tk_min + static_cast<uint32_t>(rng.below(tk_max - tk_min + 1));
      } else if (tk_distribution == "lognormal") {
        const double v = std::round(tk_mean * std::exp(tk_sigma * rng.normal()));
        length = static_cast<uint32_t>(
            std::clamp(v, static_cast<double>(tk_min), static_cast<double>(tk_max)));
      }
      s.tokens.resize(length);
      for (auto& t : s.tokens) t = static_cast<int32_t>(rng.below(tk_vocab));
      s.has_label = tk_classes > 0;
      if (s.has_label) s.label = static_cast<int64_t>(rng.below(tk_classes));
      return s;
    };
    Status st = write_dataset(tk_output, "tokens", Format::kTFRecord, tk_count, tk_per_shard,
                              threads, make);
    return st.is_ok() ? 0 : fail(st);
  }
  return 0;
}
