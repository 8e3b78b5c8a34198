/* Host side of each pod veth.
 * ingress (packets leaving the pod): DNAT to a service backend, tracked in rr_ct.
 * egress (packets entering the pod): reverse NAT of replies from backends.
 */
#include "maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"
#include "lib/nat.h"

int rr_pod_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;
    int r;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    r = rr_reverse(skb, &p);
    if (r == RR_NAT_PASS)
        r = rr_forward(skb, &p, 0);
    return r == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}

int rr_pod_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_OK;
    return rr_reverse(skb, &p) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_OK;
}
