/* Host side of each pod veth.
 * ingress (packets leaving the pod): DNAT to a service backend, tracked in rr_ct.
 * egress (packets entering the pod): reverse NAT of replies from backends (replies are
 * translated where they leave the node's routing, so a source is never made local early).
 */
#include "maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"
#include "lib/nat.h"

int rr_pod_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    return rr_forward(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

int rr_pod_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    return rr_reverse(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}
