;; A WASI module in text form (wasmtime compiles .wat as it is): prints a greeting to stdout
;; and writes it to /outputs/greeting.txt. The wasm executor preopens /inputs as fd 3
;; (read-only) and /outputs as fd 4.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from wasm\n")
  (data (i32.const 96) "greeting.txt")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))   ;; iovec: the greeting, 16 bytes
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; create /outputs/greeting.txt (oflags: creat | trunc; rights: fd_write)
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 96) (i32.const 12)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))
    (drop (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8)))))
