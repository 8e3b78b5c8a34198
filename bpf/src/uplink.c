/* The node uplink: north-south NodePort / LoadBalancer / external IP traffic.
 * ingress: reverse NAT of SNAT'd replies from remote backends,
 *          else DNAT to a backend; a remote backend under Cluster policy is
 *          reached with the source translated to the node address of the flow's
 *          family (rr_config: node_addr for IPv4, node_addr6 for IPv6).
 * egress: reverse NAT of replies from local backends to external clients (and of ICMP
 *         errors about their flows).
 * With host routing, translated packets and packets for pods of this node (replies of
 * flows to remote backends restored here) are forwarded by the program.
 * What these programs do not decide on they leave to the next filter (TC_ACT_UNSPEC),
 * so the tunnel's decapsulation filter on the same uplink still sees its packets.
 */
#include "maps.h"
#include "lib/pkt.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/hostroute.h"
#include "lib/icmp.h"

/* Send a SNAT'd packet (its source is now a local address, which the kernel's input
 * path would refuse) out of whatever interface the routing table picks for its new
 * destination: the uplink for native routing, the tunnel device otherwise. Either family;
 * a failed lookup leaves the route (and the neighbour) to bpf_redirect_neigh itself. */
static __always_inline int rr_route_out(struct __sk_buff *skb)
{
    struct bpf_fib_lookup fib;
    long rc;

    if (rr_fib_params(skb, &fib) < 0)
        return TC_ACT_SHOT;
    rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
        return rr_redirect_neigh(skb->ifindex, NULL, 0, 0);
    return rr_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

int rr_uplink_ingress(struct __sk_buff *skb)
{
    struct rr_pkt p;
    int r;

    if (rr_parse(skb, &p) < 0) /* an error about a SNAT'd flow goes to its client */
        return rr_icmp_reverse(skb, 1) ? rr_route_out(skb) : TC_ACT_UNSPEC;
    r = rr_reverse(skb, &p, 1);
    if (r == RR_NAT_PASS)
        r = rr_forward(skb, &p, 1, 1);
    if (r == RR_NAT_DROP)
        return TC_ACT_SHOT;
    if (r == RR_NAT_SNAT) /* the source is a local address: route it ourselves */
        return rr_route_out(skb);
    if (!RR_HOST_ROUTING)
        return TC_ACT_UNSPEC;
    if (r == RR_NAT_DONE)
        return rr_route_fast(skb, TC_ACT_UNSPEC);
    /* for a pod of this node (a reply from a remote backend restored here) */
    return rr_route_untranslated(skb, &p, TC_ACT_UNSPEC, 1);
}

int rr_uplink_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0) {
        rr_icmp_reverse(skb, 0); /* an error about a translated flow, to an outside client */
        return TC_ACT_UNSPEC;
    }
    return rr_reverse(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
