/* SPDX-License-Identifier: GPL-2.0 */
/* XDP on the pod's eth0. A veth drops frames XDP-redirected into it unless its peer runs an XDP
 * program (or has GRO on); this one only lets them through to the pod's stack. */
#include "lib/compat.h"

XDPCNI_PROG("xdp")
int xdp_pod(struct xdp_md *ctx)
{
	return XDP_PASS;
}
