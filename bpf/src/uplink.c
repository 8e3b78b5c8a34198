/* The node uplink: north-south NodePort / LoadBalancer / external IP traffic.
 * ingress: reverse NAT of SNAT'd replies from remote backends,
 *          else DNAT to a backend; a remote backend under Cluster policy is
 *          reached with the source translated to the node address of the flow's
 *          family (rr_config: node_addr for IPv4, node_addr6 for IPv6).
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

/* Send a SNAT'd packet (its source is now a local address, which the kernel's input
 * path would refuse) out of whatever interface the routing table picks for its new
 * destination: the uplink for native routing, the tunnel device otherwise. Either family;
 * a failed lookup leaves the route (and the neighbour) to bpf_redirect_neigh itself. */
static __always_inline int rr_route_out(struct __sk_buff *skb)
{
    struct bpf_fib_lookup fib;
    long rc;

    __builtin_memset(&fib, 0, sizeof(fib));
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr ip;

        if (bpf_skb_load_bytes(skb, RR_ETH_LEN, &ip, sizeof(ip)) < 0)
            return TC_ACT_SHOT;
        fib.family = 2; /* AF_INET */
        fib.l4_protocol = ip.protocol;
        fib.tot_len = bpf_ntohs(ip.tot_len);
        fib.ipv4_src = ip.saddr;
        fib.ipv4_dst = ip.daddr;
    } else {
        struct ipv6hdr ip6;

        if (bpf_skb_load_bytes(skb, RR_ETH_LEN, &ip6, sizeof(ip6)) < 0)
            return TC_ACT_SHOT;
        fib.family = 10; /* AF_INET6 */
        fib.l4_protocol = ip6.nexthdr;
        fib.tot_len = RR_IP6_LEN + bpf_ntohs(ip6.payload_len);
        fib.flowinfo = *(__be32 *)&ip6 & bpf_htonl(0x0fffffff); /* class and label */
        __builtin_memcpy(fib.ipv6_src, &ip6.saddr, 16);
        __builtin_memcpy(fib.ipv6_dst, &ip6.daddr, 16);
    }
    fib.ifindex = skb->ifindex;
    rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
        return rr_redirect_neigh(skb->ifindex, NULL, 0, 0);
    return rr_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

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
        return rr_route_out(skb);
    return TC_ACT_UNSPEC;
}

int rr_uplink_egress(struct __sk_buff *skb)
{
    struct rr_pkt p;

    if (rr_parse(skb, &p) < 0)
        return TC_ACT_UNSPEC;
    return rr_reverse(skb, &p, 0) == RR_NAT_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
