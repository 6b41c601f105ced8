// Overloaded: a visitor for std::visit made of lambdas, one per alternative.
#pragma once

namespace stoker::pipeline {

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};

}  // namespace stoker::pipeline
