# Decides whether gpu/ is built by nvcc (STOKER_HAVE_CUDA) or by the host
# compiler with Thrust's OpenMP backend. AUTO uses CUDA when nvcc is found.
if(NOT STOKER_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "STOKER_CUDA must be AUTO, ON or OFF, not '${STOKER_CUDA}'")
endif()

set(STOKER_HAVE_CUDA OFF)
if(NOT STOKER_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper for the GPU machine; override with -DCMAKE_CUDA_ARCHITECTURES.
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    # nvcc compiles only gpu/collate/kernels.cu and the headers it includes,
    # which are kept to C++17: CMake before 3.26 knows no C++20 flag for nvcc.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    # NCCL is for tensor-parallel fan-out (gpu/nccl_fanout.cc), built when found.
    find_package(NCCL)
    set(STOKER_HAVE_CUDA ON)
  elseif(STOKER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "STOKER_CUDA=ON but no CUDA compiler was found "
                        "(looked for nvcc on PATH and at /usr/local/cuda/bin/nvcc)")
  endif()
endif()

# OpenMP runs collation on host threads: the whole of it in a build without
# CUDA, and calls on host or pinned memory in a CUDA build.
find_package(OpenMP REQUIRED COMPONENTS CXX)
if(NOT STOKER_HAVE_CUDA)
  # Thrust and CUB are header-only; the OpenMP backend needs only their headers.
  find_path(STOKER_THRUST_INCLUDE_DIR thrust/version.h
            HINTS /usr/local/cuda/include /usr/local/cuda /usr/include ENV CUDA_HOME
            PATH_SUFFIXES cccl include/cccl include)
  if(NOT STOKER_THRUST_INCLUDE_DIR)
    message(FATAL_ERROR "Thrust headers not found: install the CUDA toolkit's CCCL "
                        "or Debian's libthrust-dev")
  endif()
endif()
if(STOKER_HAVE_CUDA)
  message(STATUS "stoker: gpu/ is built with CUDA for ${CMAKE_CUDA_ARCHITECTURES}")
else()
  message(STATUS "stoker: gpu/ is built with Thrust's OpenMP backend (no CUDA)")
endif()
