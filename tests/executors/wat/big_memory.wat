;; Needs 100 pages (6.25 MiB) of memory to start at all.
(module
  (memory 100)
  (func (export "_start")))
