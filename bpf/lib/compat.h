/* SPDX-License-Identifier: GPL-2.0 */
/* Toolchain abstraction: the same sources compile under BCC 0.26 (datapath/bccsrc.py flattens them,
 * BCC auto-includes its helpers.h) and under `clang -O2 -g -target bpf` against the uapi headers and
 * libbpf's bpf_helpers.h (datapath/objload.py loads the objects with libbpf).
 *  - XDPCNI_BCC is defined under BCC (detected by its BPF_TABLE macro), XDPCNI_LIBBPF under clang.
 *  - XDPCNI_PROG(sec): section of a program entry point ("xdp", "tc"); BCC picks programs by name.
 *  - Map access goes through per-map accessors in maps.h: BCC refuses map methods inside macros
 *    ("cannot use map function inside a macro") and does not rewrite `&map` in helper calls. */
#pragma once

#ifdef BPF_TABLE
#define XDPCNI_BCC 1
#define XDPCNI_PROG(sec)
#else
#define XDPCNI_LIBBPF 1
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#define XDPCNI_PROG(sec) SEC(sec)

/* One translation unit per program: the license goes with the first include. */
char _license[] SEC("license") = "GPL";
#endif
