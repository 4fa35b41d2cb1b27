;; Loops forever (until a timeout, a kill, or its fuel runs out).
(module
  (func (export "_start")
    (loop $forever (br $forever))))
