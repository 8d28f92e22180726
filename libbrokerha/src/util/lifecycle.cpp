// SPDX-License-Identifier: Apache-2.0
#include "util/lifecycle.hpp"

#include <brokerha/error.hpp>

#include <new>

namespace brokerha::util {

std::error_code current_exception_code() noexcept {
  try {
    throw;
  } catch (const std::system_error& e) {
    return e.code();
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  } catch (...) {
    return make_error_code(errc::invalid_argument);
  }
}

}  // namespace brokerha::util
