;; Tries to overwrite /inputs/in/data.txt (fd 3) with "changed"; exits 1 when it may not.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "in/data.txt")
  (data (i32.const 96) "changed")
  (func (export "_start")
    ;; oflags: trunc 8; rights: fd_write = 64
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 11)
                         (i32.const 8) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 96))
    (i32.store (i32.const 4) (i32.const 7))
    (if (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 1))))))
