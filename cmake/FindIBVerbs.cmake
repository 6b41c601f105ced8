# Finds libibverbs (rdma-core) for RDMA device discovery and NIC locality.
# Optional: without it stoker reports no RDMA devices. Defines IBVerbs::ibverbs.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_IBVERBS QUIET libibverbs)
endif()
find_path(IBVERBS_INCLUDE_DIR infiniband/verbs.h HINTS ${PC_IBVERBS_INCLUDE_DIRS})
find_library(IBVERBS_LIBRARY ibverbs HINTS ${PC_IBVERBS_LIBRARY_DIRS})
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(IBVerbs REQUIRED_VARS IBVERBS_INCLUDE_DIR IBVERBS_LIBRARY
                                  VERSION_VAR PC_IBVERBS_VERSION)
if(IBVerbs_FOUND AND NOT TARGET IBVerbs::ibverbs)
  add_library(IBVerbs::ibverbs UNKNOWN IMPORTED)
  set_target_properties(IBVerbs::ibverbs PROPERTIES IMPORTED_LOCATION "${IBVERBS_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${IBVERBS_INCLUDE_DIR}")
endif()
mark_as_advanced(IBVERBS_INCLUDE_DIR IBVERBS_LIBRARY)
