/* Forwarding in BPF: the routing table asked with bpf_fib_lookup and the packet handed
 * straight to the next hop's interface, as Cilium's "eBPF host routing" does. A packet
 * the program translated then skips the kernel's input and forwarding path (netfilter
 * hooks, the route cache's second lookup, the neighbour output); what the kernel would
 * do more for it stays with the kernel.
 */
#ifndef RR_LIB_ROUTE_H
#define RR_LIB_ROUTE_H

#include "lib/pkt.h"

/* bcc declares bpf_redirect_neigh with three arguments; the helper takes four. */
static long (*rr_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
                                 __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

/* The length the route's MTU is checked against: the packet's, or for a GSO packet the
 * length of each segment it will be cut into (its headers, l3 bytes of network header
 * then the transport header, plus gso_size). The kernel checks a route's own MTU (a
 * route's mtu metric, a learnt path MTU) only when asked with this length; without it,
 * only the device's. */
static __always_inline __u16 rr_fib_len(struct __sk_buff *skb, __u32 l3, __u8 proto,
                                        __u32 pkt_len)
{
    __u8 doff = 5 << 4;

    if (!skb->gso_size)
        return pkt_len;
    if (proto != IPPROTO_TCP)
        return l3 + 8 + skb->gso_size;
    if (bpf_skb_load_bytes(skb, RR_ETH_LEN + l3 + 12, &doff, 1) < 0)
        doff = 5 << 4;
    return l3 + (doff >> 4) * 4 + skb->gso_size;
}

/* fib's question for skb's packet (either family) as forwarded from the interface it is
 * on, with its length (rr_fib_len), so that the answer says when it is too big for the
 * route (BPF_FIB_LKUP_RET_FRAG_NEEDED). -1 if the header cannot be read. */
static __always_inline int rr_fib_params(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
    __builtin_memset(fib, 0, sizeof(*fib));
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr ip;

        if (bpf_skb_load_bytes(skb, RR_ETH_LEN, &ip, sizeof(ip)) < 0)
            return -1;
        fib->family = 2; /* AF_INET */
        fib->l4_protocol = ip.protocol;
        fib->tos = ip.tos;
        fib->ipv4_src = ip.saddr;
        fib->ipv4_dst = ip.daddr;
        fib->tot_len = rr_fib_len(skb, ip.ihl * 4, ip.protocol, bpf_ntohs(ip.tot_len));
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;

        if (bpf_skb_load_bytes(skb, RR_ETH_LEN, &ip6, sizeof(ip6)) < 0)
            return -1;
        fib->family = 10; /* AF_INET6 */
        fib->l4_protocol = ip6.nexthdr;
        fib->flowinfo = *(__be32 *)&ip6 & bpf_htonl(0x0fffffff); /* class and label */
        __builtin_memcpy(fib->ipv6_src, &ip6.saddr, 16);
        __builtin_memcpy(fib->ipv6_dst, &ip6.daddr, 16);
        fib->tot_len = rr_fib_len(skb, RR_IP6_LEN, ip6.nexthdr,
                                  RR_IP6_LEN + bpf_ntohs(ip6.payload_len));
    } else {
        return -1;
    }
    fib->ifindex = skb->ifindex;
    return 0;
}

/* Will skb's packet (IPv4 or IPv6) live on after a hop: TTL (hop limit) above 1? */
static __always_inline int rr_ttl_ok(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr *ip = data + RR_ETH_LEN;

        return (void *)(ip + 1) <= end && ip->ttl > 1;
    }
    if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = data + RR_ETH_LEN;

        return (void *)(ip6 + 1) <= end && ip6->hop_limit > 1;
    }
    return 0;
}

static __always_inline int rr_mac_eq(const __u8 *a, const __u8 *b)
{
    return *(__u32 *)a == *(__u32 *)b && *(__u16 *)(a + 4) == *(__u16 *)(b + 4);
}

/* May the program forward skb's packet itself (at TC ingress), as the kernel would? 0
 * with fib filled (the route's interface, the next hop's MAC addresses): routed by the
 * table of the interface it came in on. RR_ROUTE_NEIGH when only the next hop's
 * neighbour is not resolved yet: fib names the route's interface, and the packet is sent
 * through the neighbour subsystem, which resolves it (bpf_redirect_neigh), as Cilium
 * does. -1 for whatever the kernel's path must do more for: no route, a local
 * destination, forwarding disabled on the interface, a packet too big for the route's
 * MTU (the ICMP error), a TTL that would expire (the ICMP error). Asked before the packet
 * is rewritten, so a packet left to the kernel can be left as it came. */
#define RR_ROUTE_NEIGH 1
static __always_inline int rr_route_lookup(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
    long rc;

    if (!rr_ttl_ok(skb))
        return -1;
    if (rr_fib_params(skb, fib) < 0)
        return -1;
    rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return 0;
    return rc == BPF_FIB_LKUP_RET_NO_NEIGH ? RR_ROUTE_NEIGH : -1;
}

/* Does fib's route lead into a pod of this node: its interface a pod veth in rr_pod_ifs,
 * the MAC matching? */
static __always_inline int rr_into_pod(struct bpf_fib_lookup *fib)
{
    struct rr_pod_if *pi = rr_pod_ifs.lookup(&fib->ifindex);

    return pi && rr_mac_eq(pi->mac, fib->smac);
}

/* How rr_route_send sends a packet: to the next hop (its Ethernet addresses written, out
 * of the route's interface, whose TC egress programs still run), into a pod of this node
 * (the same, then bpf_redirect_peer: no pass through the host veth's queue and the
 * backlog, nor its egress programs), or through the neighbour subsystem (the next hop
 * not resolved yet: bpf_redirect_neigh writes the addresses once it is). */
#define RR_SEND_NEXT_HOP 0
#define RR_SEND_INTO_POD 1
#define RR_SEND_NEIGH 2

/* How to send on by fib, rr_route_lookup's answer r (0 or RR_ROUTE_NEIGH). */
static __always_inline int rr_route_how(struct bpf_fib_lookup *fib, int r)
{
    if (r == RR_ROUTE_NEIGH)
        return RR_SEND_NEIGH;
    return rr_into_pod(fib) ? RR_SEND_INTO_POD : RR_SEND_NEXT_HOP;
}

/* Send the packet on by fib (rr_route_lookup's answer) as how says (RR_SEND_*), its TTL
 * (hop limit) down by one. The packet's family is the frame's, not fib's: an IPv4 route
 * through an IPv6 gateway (RFC 8950, `via inet6`) comes back with fib->family AF_INET6. */
static __always_inline int rr_route_send(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
                                         int how)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;

    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr *ip = data + RR_ETH_LEN;
        __u32 check;

        if ((void *)(ip + 1) > end)
            return TC_ACT_SHOT;
        /* ip_decrease_ttl: the TTL is the high byte of its 16-bit checksum word */
        check = ip->check;
        check += htons(0x0100);
        ip->check = (__u16)(check + (check >= 0xffff));
        ip->ttl--;
    } else {
        struct ipv6hdr *ip6 = data + RR_ETH_LEN;

        if ((void *)(ip6 + 1) > end)
            return TC_ACT_SHOT;
        ip6->hop_limit--;
    }
    if (how == RR_SEND_NEIGH)
        return rr_redirect_neigh(fib->ifindex, NULL, 0, 0);
    __builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
    if (how == RR_SEND_INTO_POD)
        return bpf_redirect_peer(fib->ifindex, 0);
    return bpf_redirect(fib->ifindex, 0);
}

/* Forward a translated packet in BPF when the kernel need not see it; else stack (the
 * verdict: TC_ACT_OK, or TC_ACT_UNSPEC where later filters must still see it). */
static __always_inline int rr_route_fast(struct __sk_buff *skb, int stack)
{
    struct bpf_fib_lookup fib;
    int r = rr_route_lookup(skb, &fib);

    if (r < 0)
        return stack;
    return rr_route_send(skb, &fib, rr_route_how(&fib, r));
}

/* Send the packet (at a pod veth's TC ingress) back into the pod it leaves, as forwarded
 * there: a hairpin flow's, whose destination is that pod whatever the routes say (and
 * whose source, the service loopback address or a service's, the node's reverse path
 * filter would not expect on this veth). Its Ethernet addresses swapped; stack when its
 * TTL would expire (the kernel answers that). */
static __always_inline int rr_route_back(struct __sk_buff *skb, int stack)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct bpf_fib_lookup fib = {};

    if ((void *)(eth + 1) > end || !rr_ttl_ok(skb))
        return stack;
    fib.family = skb->protocol == htons(ETH_P_IP) ? 2 : 10;
    fib.ifindex = skb->ifindex;
    __builtin_memcpy(fib.dmac, eth->h_source, ETH_ALEN);
    __builtin_memcpy(fib.smac, eth->h_dest, ETH_ALEN);
    return rr_route_send(skb, &fib, RR_SEND_INTO_POD);
}

#endif
