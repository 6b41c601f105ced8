// libFuzzer target over every decoder that reads bytes from a peer or a
// file: control frames (header and protobuf body), data-plane messages
// (hello, welcome, attach, refusal, credit, ready notices), batch
// descriptors, and the journal's record framing on replay. The first input
// byte picks the decoder; the rest is its input. Decoders must reject
// garbage with a Status; any crash, sanitizer report or hang is a bug.
//
//   build/fuzz/tests/fuzz/decoders_fuzzer -max_total_time=60 tests/fuzz/corpus
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>

#include "coordinator/journal.h"
#include "stoker/batch_descriptor.h"
#include "transport/control/control_frame.h"
#include "transport/data_plane_messages.h"

namespace {

using namespace stoker;

void fuzz_journal(std::span<const std::byte> bytes) {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("stoker-fuzz-journal-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "journal.log", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
  size_t records = 0;
  auto journal = coordinator::Journal::open(dir.string(), coordinator::Durability::kOs,
                                            [&](std::span<const std::byte> payload, uint64_t) {
                                              records += payload.size() > 0 ? 1 : 0;
                                              return Status::ok();
                                            });
  (void)journal;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  switch (data[0] % 11) {
    case 0:
      (void)control::decode_frame_header(in);
      break;
    case 1:
      (void)control::decode_body(in, control::kMaxBodyBytes);
      break;
    case 2:
      (void)BatchDescriptor::decode(in);
      break;
    case 3:
      (void)BatchDescriptor::encoded_size_of(in);
      break;
    case 4:
      (void)wire::Hello::decode(in);
      break;
    case 5:
      (void)wire::Welcome::decode(in);
      break;
    case 6:
      (void)wire::Attach::decode(in);
      break;
    case 7:
      (void)wire::Refusal::decode(in);
      break;
    case 8:
      (void)wire::Credit::decode(in, 64);
      break;
    case 9:
      (void)wire::BatchReady::decode_list(in);
      break;
    case 10:
      fuzz_journal(in);
      break;
  }
  return 0;
}
