/* Packet parsing and address/port rewriting with checksum fix-ups (IPv4 and IPv6,
 * TCP/UDP). Headers are read and written with direct packet access; the checksum
 * helpers take offsets, so they run after the stores (they invalidate packet pointers).
 */
#ifndef RR_LIB_PKT_H
#define RR_LIB_PKT_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#define RR_ETH_LEN 14
#define RR_IP_SADDR_OFF (RR_ETH_LEN + 12)
#define RR_IP_DADDR_OFF (RR_ETH_LEN + 16)
#define RR_IP_CSUM_OFF (RR_ETH_LEN + 10)
#define RR_IP6_SADDR_OFF (RR_ETH_LEN + 8)
#define RR_IP6_DADDR_OFF (RR_ETH_LEN + 24)
#define RR_IP6_LEN 40
#define RR_IPPROTO_FRAG6 44

#define RR_TCP_FIN 0x01
#define RR_TCP_SYN 0x02
#define RR_TCP_RST 0x04

struct rr_pkt {
    struct rr_ct_key t; /* tuple as seen on the wire, dir = forward */
    __u32 l4off;
    __u8 tcp_flags; /* the TCP header's flags byte; 0 for UDP */
};

/* Make the first len bytes linear if they are not; 0 when data + len <= data_end. */
static __always_inline int rr_linear(struct __sk_buff *skb, __u32 len)
{
    if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
        return 0;
    if (bpf_skb_pull_data(skb, len) < 0)
        return -1;
    if ((void *)(long)skb->data + len > (void *)(long)skb->data_end)
        return -1;
    return 0;
}

/* p->tcp_flags from the TCP header at ports (the L4 header in the linear part), or with a
 * helper at p->l4off when that part is short; 0 for UDP or when it cannot be read. */
static __always_inline void rr_parse_flags(struct __sk_buff *skb, struct rr_pkt *p,
                                           __u8 *ports, void *end)
{
    p->tcp_flags = 0;
    if (p->t.proto != IPPROTO_TCP)
        return;
    if (ports && (void *)(ports + 14) <= end)
        p->tcp_flags = ports[13];
    else if (bpf_skb_load_bytes(skb, p->l4off + 13, &p->tcp_flags, 1) < 0)
        p->tcp_flags = 0;
}

/* The ports sit at a constant offset when the IPv4 header has no options (the common
 * case, read directly); with options they are read with a helper. */
static __always_inline int rr_parse4(struct __sk_buff *skb, struct rr_pkt *p)
{
    void *data, *end;
    struct iphdr *ip;
    __be16 *ports;
    __be16 pb[2];

    if (rr_linear(skb, RR_ETH_LEN + sizeof(*ip) + 4) < 0)
        return -1;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip = data + RR_ETH_LEN;
    ports = data + RR_ETH_LEN + sizeof(*ip);
    if ((void *)(ports + 2) > end)
        return -1;
    if (ip->version != 4 || ip->ihl < 5)
        return -1;
    if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
        return -1;
    if (ip->frag_off & htons(0x1fff)) /* a later fragment has no ports */
        return -1;
    p->t.saddr.w[0] = ip->saddr;
    p->t.saddr.w[1] = 0;
    p->t.saddr.w[2] = 0;
    p->t.saddr.w[3] = 0;
    p->t.daddr.w[0] = ip->daddr;
    p->t.daddr.w[1] = 0;
    p->t.daddr.w[2] = 0;
    p->t.daddr.w[3] = 0;
    p->t.proto = ip->protocol;
    p->t.family = RR_AF_INET;
    p->t.dir = RR_DIR_FORWARD;
    p->t.pad = 0;
    p->l4off = RR_ETH_LEN + ip->ihl * 4;
    if (ip->ihl == 5) {
        p->t.sport = ports[0];
        p->t.dport = ports[1];
        rr_parse_flags(skb, p, (__u8 *)ports, end);
    } else {
        if (bpf_skb_load_bytes(skb, p->l4off, pb, sizeof(pb)) < 0)
            return -1;
        p->t.sport = pb[0];
        p->t.dport = pb[1];
        rr_parse_flags(skb, p, NULL, end);
    }
    return 0;
}

/* IPv6 with TCP or UDP as the first next header (no extension headers). */
static __always_inline int rr_parse6(struct __sk_buff *skb, struct rr_pkt *p)
{
    void *data, *end;
    struct ipv6hdr *ip6;
    __be16 *ports;

    if (rr_linear(skb, RR_ETH_LEN + RR_IP6_LEN + 4) < 0)
        return -1;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    ip6 = data + RR_ETH_LEN;
    ports = data + RR_ETH_LEN + RR_IP6_LEN;
    if ((void *)(ports + 2) > end)
        return -1;
    if (ip6->version != 6)
        return -1;
    if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
        return -1;
    __builtin_memcpy(&p->t.saddr, &ip6->saddr, 16);
    __builtin_memcpy(&p->t.daddr, &ip6->daddr, 16);
    p->t.sport = ports[0];
    p->t.dport = ports[1];
    p->t.proto = ip6->nexthdr;
    p->t.family = RR_AF_INET6;
    p->t.dir = RR_DIR_FORWARD;
    p->t.pad = 0;
    p->l4off = RR_ETH_LEN + RR_IP6_LEN;
    rr_parse_flags(skb, p, (__u8 *)ports, end);
    return 0;
}

/* Fill p from skb. Returns 0 for an IPv4 or IPv6 TCP/UDP packet that carries ports. */
static __always_inline int rr_parse(struct __sk_buff *skb, struct rr_pkt *p)
{
    if (skb->protocol == htons(ETH_P_IP))
        return rr_parse4(skb, p);
    if (skb->protocol == htons(ETH_P_IPV6))
        return rr_parse6(skb, p);
    return -1;
}

static __always_inline int rr_l4_csum_off(struct rr_pkt *p)
{
    return p->l4off + (p->t.proto == IPPROTO_TCP ? 16 : 6);
}

static __always_inline __u64 rr_l4_flags(struct rr_pkt *p)
{
    return p->t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* RFC 1624 incremental update of the IPv4 header checksum for a 32-bit field changing
 * from -> to. One's complement sums do not depend on byte order, so the halves are
 * added as they sit in memory. The IPv4 header checksum is always complete. */
static __always_inline void rr_ip4_csum_replace(struct iphdr *ip, __be32 from, __be32 to)
{
    __u32 s = (__u16)~ip->check;

    s += (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    ip->check = (__u16)~s;
}

/* What bpf_csum_diff(from, 16, to, 16, 0) returns (up to one's complement equivalence),
 * without the helper call: the sum of ~from and to as 32-bit words. */
static __always_inline __u32 rr_csum_diff16(const struct rr_addr *from, const struct rr_addr *to)
{
    __u64 s = 0;
    int i;

#pragma unroll
    for (i = 0; i < 4; i++)
        s += (__u32)~from->w[i] + (__u64)to->w[i];
    s = (s & 0xffffffff) + (s >> 32);
    s = (s & 0xffffffff) + (s >> 32);
    return (__u32)s;
}

static __always_inline int rr_addr_eq(const struct rr_addr *a, const struct rr_addr *b)
{
    return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] &&
           a->w[3] == b->w[3];
}

/* Rewrite one address (source if is_src) and its port, fixing the checksums. The new
 * values and the IPv4 header checksum are stored directly; then the L4 checksum helper
 * adjusts by the old/new values (pseudo-header flag on the address, not on the port;
 * the helper also handles CHECKSUM_PARTIAL packets, which inline arithmetic cannot see).
 * The tuple in p keeps the values as parsed. */
static __always_inline int rr_rewrite(struct __sk_buff *skb, struct rr_pkt *p, int is_src,
                                      const struct rr_addr *old_ip, const struct rr_addr *new_ip,
                                      __be16 old_port, __be16 new_port)
{
    int coff = rr_l4_csum_off(p);
    __u64 l4f = rr_l4_flags(p);
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct rr_addr na = *new_ip;
    struct rr_addr oa = *old_ip;
    int port_changed = old_port != new_port;
    int addr_changed;

    if (p->t.family == RR_AF_INET) {
        struct iphdr *ip = data + RR_ETH_LEN;
        __be16 *ports = data + RR_ETH_LEN + sizeof(*ip);

        if ((void *)(ports + 2) > end)
            return -1;
        addr_changed = oa.w[0] != na.w[0];
        if (addr_changed) {
            if (is_src)
                ip->saddr = na.w[0];
            else
                ip->daddr = na.w[0];
            rr_ip4_csum_replace(ip, oa.w[0], na.w[0]);
        }
        if (port_changed) {
            if (p->l4off == RR_ETH_LEN + sizeof(*ip)) {
                ports[is_src ? 0 : 1] = new_port;
            } else if (bpf_skb_store_bytes(skb, p->l4off + (is_src ? 0 : 2), &new_port,
                                           sizeof(new_port), 0) < 0) {
                return -1;
            }
        }
        if (addr_changed &&
            bpf_l4_csum_replace(skb, coff, oa.w[0], na.w[0],
                                l4f | BPF_F_PSEUDO_HDR | sizeof(na.w[0])) < 0)
            return -1;
    } else {
        struct ipv6hdr *ip6 = data + RR_ETH_LEN;
        __be16 *ports = data + RR_ETH_LEN + RR_IP6_LEN;
        __u32 *a;

        if ((void *)(ports + 2) > end)
            return -1;
        addr_changed = !rr_addr_eq(&oa, &na);
        if (addr_changed) {
            a = is_src ? (__u32 *)&ip6->saddr : (__u32 *)&ip6->daddr;
            a[0] = na.w[0];
            a[1] = na.w[1];
            a[2] = na.w[2];
            a[3] = na.w[3];
        }
        if (port_changed)
            ports[is_src ? 0 : 1] = new_port;
        if (addr_changed &&
            bpf_l4_csum_replace(skb, coff, 0, rr_csum_diff16(&oa, &na),
                                l4f | BPF_F_PSEUDO_HDR) < 0)
            return -1;
    }
    if (port_changed &&
        bpf_l4_csum_replace(skb, coff, old_port, new_port, l4f | sizeof(new_port)) < 0)
        return -1;
    return 0;
}

#endif
