/* The node uplink: north-south NodePort / LoadBalancer / external IP traffic.
 * ingress: reverse NAT of SNAT'd replies from remote backends,
 *          else DNAT to a backend; a remote backend under Cluster policy is
 *          reached with the source translated to the node address.
 * egress: reverse NAT of replies from local backends to external clients.
 * What these programs do not decide on they leave to the next filter (TC_ACT_UNSPEC),
 * so the tunnel's decapsulation filter on the same uplink still sees its packets.
 */
#include "maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"
#include "lib/nat.h"

static long (*rr_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                 __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

int rr_uplink_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;
    int r;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_UNSPEC;
    r = rr_reverse(skb, &p, 1);
    if (r == RR_NAT_PASS)
        r = rr_forward(skb, &p, 1);
    if (r == RR_NAT_DROP)
        return TC_ACT_SHOT;
    if (r == RR_NAT_SNAT) /* the source is a local address: route it ourselves */
        return rr_redirect_neigh(skb->ifindex, NULL, 0, 0);
    return TC_ACT_UNSPEC;
}

int rr_uplink_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_UNSPEC;
    return rr_reverse(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
