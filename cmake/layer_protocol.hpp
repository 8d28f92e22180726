// SPDX-License-Identifier: Apache-2.0
// Force-included (-include) into every source of the sans-I/O protocol layer
// (libbrokerha/CMakeLists.txt: brokerha_protocol). It poisons the namespaces of the I/O
// dependencies, so a protocol source that includes Asio, cpp-httplib, RapidJSON or c-ares, even
// through another header, fails to compile with "attempt to use poisoned". Code that needs them
// belongs to the I/O layer (brokerha_objects).
#pragma GCC poison asio httplib rapidjson ares_channel
