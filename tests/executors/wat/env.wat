;; Prints "$GREETING $BFLOW_SHARD_INDEX\n" (a missing variable prints as nothing).
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: variable count, 4: buffer size, 16: iovec, 24: written; 1024: pointers; 8192: strings
  (data (i32.const 256) "GREETING=")
  (data (i32.const 288) "BFLOW_SHARD_INDEX=")
  (data (i32.const 320) " \n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  (func $strlen (param $s i32) (result i32) (local $n i32)
    (block $end
      (loop $next
        (br_if $end (i32.eqz (i32.load8_u (i32.add (local.get $s) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func $starts_with (param $s i32) (param $prefix i32) (param $n i32) (result i32)
    (loop $next
      (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load8_u (local.get $s)) (i32.load8_u (local.get $prefix)))
        (then (return (i32.const 0))))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (local.set $prefix (i32.add (local.get $prefix) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next))
    (i32.const 0))
  (func $print_value (param $name i32) (param $len i32) (local $i i32) (local $entry i32)
    ;; prints the value of the variable whose "NAME=" is the len bytes at name
    (block $none
      (loop $each
        (br_if $none (i32.ge_u (local.get $i) (i32.load (i32.const 0))))
        (local.set $entry (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 2)))))
        (if (call $starts_with (local.get $entry) (local.get $name) (local.get $len))
          (then
            (local.set $entry (i32.add (local.get $entry) (local.get $len)))
            (call $print (local.get $entry) (call $strlen (local.get $entry)))
            (return)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each))))
  (func (export "_start")
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $environ_get (i32.const 1024) (i32.const 8192)))
    (call $print_value (i32.const 256) (i32.const 9))
    (call $print (i32.const 320) (i32.const 1))
    (call $print_value (i32.const 288) (i32.const 18))
    (call $print (i32.const 321) (i32.const 1))))
