;; Imports a function that is not WASI.
(module
  (import "env" "host_magic" (func $magic))
  (func (export "_start") (call $magic)))
