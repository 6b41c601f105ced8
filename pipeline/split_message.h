// Splits as the control channel carries them (stoker.control.Split) and as
// pipelines run them (pipeline::Split): the one place that converts.
#pragma once

#include "pipeline/split.h"
#include "transport/control/control.pb.h"

namespace stoker::pipeline {

inline Split split_of(const control::Split& s) {
  return {.id = s.id(),
          .shard = s.shard(),
          .begin = s.begin(),
          .end = s.end(),
          .stride = s.stride(),
          .phase = s.phase()};
}

inline control::Split message_of(const Split& s) {
  control::Split out;
  out.set_id(s.id);
  out.set_shard(s.shard);
  out.set_begin(s.begin);
  out.set_end(s.end);
  out.set_stride(s.stride);
  out.set_phase(s.phase);
  return out;
}

}  // namespace stoker::pipeline
