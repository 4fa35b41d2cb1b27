;; Copies /inputs/in/data.txt to /outputs/copied.txt. The executor preopens /inputs as
;; fd 3 and /outputs as fd 4. Exits 1 if a file cannot be opened.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "in/data.txt")
  (data (i32.const 96) "copied.txt")
  (func (export "_start") (local $in i32) (local $out i32) (local $n i32)
    ;; open the input for reading (rights: fd_read = 2)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 11)
                         (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))
    (local.set $in (i32.load (i32.const 16)))
    ;; create the output (oflags: creat 1 | trunc 8; rights: fd_write = 64)
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 96) (i32.const 10)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))
    (local.set $out (i32.load (i32.const 16)))
    (block $done
      (loop $copy
        (i32.store (i32.const 0) (i32.const 1024))  ;; iovec: 4 KiB buffer at 1024
        (i32.store (i32.const 4) (i32.const 4096))
        (br_if $done (call $fd_read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 4) (local.get $n))
        (drop (call $fd_write (local.get $out) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br $copy)))))
