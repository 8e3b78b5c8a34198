/* ICMP errors about translated flows, reverse-translated as the kernel's NAT does for
 * "related" packets: an error (destination unreachable, fragmentation needed or packet
 * too big, time exceeded) carries the start of the packet it answers, which left with
 * the backend's address. The client's socket knows the service address, so without this
 * it would never see the error: path MTU discovery through a service would stall, and a
 * UDP client would never learn that a backend refused its port.
 *
 * The embedded packet (client or SNAT source -> backend) is the reverse of a reply
 * entry's tuple. With that entry found, the embedded source gets the client's address
 * and port back (a change only after SNAT or a port remap), the embedded destination the
 * service's; the outer destination follows the embedded source, and when the backend
 * itself sent the error, the outer source becomes the service address. Errors about
 * plain flows are translated where replies are (the client's veth, the uplink's
 * egress); errors about SNAT'd flows come back to the node's address and are translated
 * on the uplink's ingress, whose caller then routes them out. Checksums are updated in
 * place; every change is balanced by its checksum's, so a CHECKSUM_COMPLETE sum stays
 * right. Only the common shapes are handled: no IPv4 options, no IPv6 extension headers,
 * outer or inner.
 */
#ifndef RR_LIB_ICMP_H
#define RR_LIB_ICMP_H

#include <uapi/linux/icmp.h>
#include <uapi/linux/icmpv6.h>

#include "lib/nat.h"

#define RR_ICMP_OFF (RR_ETH_LEN + 20)          /* IPv4: the ICMP header */
#define RR_ICMP_INNER (RR_ICMP_OFF + 8)        /* the embedded IPv4 header */
#define RR_ICMP6_OFF (RR_ETH_LEN + RR_IP6_LEN) /* IPv6: the ICMPv6 header */
#define RR_ICMP6_INNER (RR_ICMP6_OFF + 8)      /* the embedded IPv6 header */

/* RFC 1624: checksum *c after the sum s of (~old + new) words was added (a 64-bit sum
 * of a few 32-bit terms: it cannot overflow). */
static __always_inline void rr_csum_apply(__sum16 *c, __u64 s)
{
    __u64 t = (__u64)(__u16)~*c + s;

    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    t = (t & 0xffff) + (t >> 16);
    *c = (__u16)~t;
}

static __always_inline __u32 rr_csum_diff2(__be16 from, __be16 to)
{
    return (__u16)~from + (__u32)to;
}

/* Is skb an ICMP error of a shape handled here? Then *e holds the embedded packet's
 * tuple as a reply entry's key (backend -> client or SNAT source) and 1 is returned. */
static __always_inline int rr_icmp_embedded(struct __sk_buff *skb, struct rr_pkt *e)
{
    void *data, *end;
    __be16 *ports;

    __builtin_memset(e, 0, sizeof(*e));
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr *ip, *in;
        struct icmphdr *ic;

        if (rr_linear(skb, RR_ICMP_INNER + 20 + 4) < 0)
            return 0;
        data = (void *)(long)skb->data;
        end = (void *)(long)skb->data_end;
        ip = data + RR_ETH_LEN;
        ic = data + RR_ICMP_OFF;
        in = data + RR_ICMP_INNER;
        ports = data + RR_ICMP_INNER + 20;
        if ((void *)(ports + 2) > end)
            return 0;
        if (ip->ihl != 5 || ip->protocol != IPPROTO_ICMP || (ip->frag_off & htons(0x1fff)))
            return 0;
        if (ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED)
            return 0;
        if (in->ihl != 5 || (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
            return 0;
        e->t.saddr.w[0] = in->daddr;
        e->t.daddr.w[0] = in->saddr;
        e->t.proto = in->protocol;
        e->t.family = RR_AF_INET;
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6, *in;
        struct icmp6hdr *ic;

        if (rr_linear(skb, RR_ICMP6_INNER + RR_IP6_LEN + 4) < 0)
            return 0;
        data = (void *)(long)skb->data;
        end = (void *)(long)skb->data_end;
        ip6 = data + RR_ETH_LEN;
        ic = data + RR_ICMP6_OFF;
        in = data + RR_ICMP6_INNER;
        ports = data + RR_ICMP6_INNER + RR_IP6_LEN;
        if ((void *)(ports + 2) > end)
            return 0;
        if (ip6->nexthdr != IPPROTO_ICMPV6 || ic->icmp6_type < ICMPV6_DEST_UNREACH ||
            ic->icmp6_type > ICMPV6_TIME_EXCEED)
            return 0;
        if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
            return 0;
        __builtin_memcpy(&e->t.saddr, &in->daddr, 16);
        __builtin_memcpy(&e->t.daddr, &in->saddr, 16);
        e->t.proto = in->nexthdr;
        e->t.family = RR_AF_INET6;
    } else {
        return 0;
    }
    e->t.sport = ports[1];
    e->t.dport = ports[0];
    return 1;
}

/* Rewrite an IPv4 error by its flow's reply entry ci (module comment). */
static __always_inline void rr_icmp4_rewrite(struct __sk_buff *skb, const struct rr_ct_info *ci)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct iphdr *ip = data + RR_ETH_LEN, *in = data + RR_ICMP_INNER;
    struct icmphdr *ic = data + RR_ICMP_OFF;
    __be16 *ports = data + RR_ICMP_INNER + 20;
    __be32 src, dst;
    __u64 s;

    if ((void *)(ports + 2) > end)
        return;
    src = in->saddr;
    dst = in->daddr;
    in->saddr = ci->addr.w[0];
    rr_ip4_csum_replace(in, src, ci->addr.w[0]); /* the inner header's sum is kept */
    in->daddr = ci->nat_addr.w[0];
    rr_ip4_csum_replace(in, dst, ci->nat_addr.w[0]);
    s = rr_csum_diff2(ports[0], ci->port) + rr_csum_diff2(ports[1], ci->nat_port);
    ports[0] = ci->port;
    ports[1] = ci->nat_port;
    rr_csum_apply(&ic->checksum, s); /* the ICMP checksum: only the ports moved it */
    if (ip->daddr == src) {
        ip->daddr = ci->addr.w[0];
        rr_ip4_csum_replace(ip, src, ci->addr.w[0]);
    }
    if (ip->saddr == dst) { /* the backend itself answered */
        ip->saddr = ci->nat_addr.w[0];
        rr_ip4_csum_replace(ip, dst, ci->nat_addr.w[0]);
    }
}

/* Rewrite an IPv6 error by its flow's reply entry ci: ICMPv6's checksum covers the
 * pseudo-header (the outer addresses) and the embedded header, so every address and
 * port change is summed into it. */
static __always_inline void rr_icmp6_rewrite(struct __sk_buff *skb, const struct rr_pkt *e,
                                             const struct rr_ct_info *ci)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ipv6hdr *ip6 = data + RR_ETH_LEN, *in = data + RR_ICMP6_INNER;
    struct icmp6hdr *ic = data + RR_ICMP6_OFF;
    __be16 *ports = data + RR_ICMP6_INNER + RR_IP6_LEN;
    struct rr_addr outer;
    __u64 s;

    if ((void *)(ports + 2) > end)
        return;
    __builtin_memcpy(&in->saddr, &ci->addr, 16);
    __builtin_memcpy(&in->daddr, &ci->nat_addr, 16);
    s = (__u64)rr_csum_diff16(&e->t.daddr, &ci->addr) +
        rr_csum_diff16(&e->t.saddr, &ci->nat_addr);
    s += rr_csum_diff2(ports[0], ci->port) + rr_csum_diff2(ports[1], ci->nat_port);
    ports[0] = ci->port;
    ports[1] = ci->nat_port;
    __builtin_memcpy(&outer, &ip6->daddr, 16);
    if (rr_addr_eq(&outer, &e->t.daddr)) {
        __builtin_memcpy(&ip6->daddr, &ci->addr, 16);
        s += rr_csum_diff16(&e->t.daddr, &ci->addr);
    }
    __builtin_memcpy(&outer, &ip6->saddr, 16);
    if (rr_addr_eq(&outer, &e->t.saddr)) { /* the backend itself answered */
        __builtin_memcpy(&ip6->saddr, &ci->nat_addr, 16);
        s += rr_csum_diff16(&e->t.saddr, &ci->nat_addr);
    }
    rr_csum_apply(&ic->icmp6_cksum, s);
}

/* Reverse-translate skb when it is an ICMP error about a translated flow whose entry's
 * flags under mask are want. 1 if it was translated. */
static __always_inline int rr_icmp_translate(struct __sk_buff *skb, __u16 mask, __u16 want)
{
    struct rr_ct_info ci = {};
    struct rr_pkt e;

    if (!rr_icmp_embedded(skb, &e) || !rr_ct_get(&e, RR_DIR_REPLY, &ci) ||
        (ci.flags & mask) != want)
        return 0;
    if (e.t.family == RR_AF_INET)
        rr_icmp4_rewrite(skb, &ci);
    else
        rr_icmp6_rewrite(skb, &e, &ci);
    return 1;
}

/* Reverse-translate skb when it is an ICMP error about a translated flow: one of a plain
 * flow (snat 0: on the client's veth, the uplink's egress) or one of a SNAT'd flow come
 * back to the node's address (snat 1: the uplink's ingress; the caller routes it out,
 * its source may now be a node address). 1 if it was translated. */
static __always_inline int rr_icmp_reverse(struct __sk_buff *skb, int snat)
{
    return rr_icmp_translate(skb, RR_CT_SNAT, snat ? RR_CT_SNAT : 0);
}

/* An error a pod sends about a hairpin flow (to the service loopback address, leaving
 * the pod that is its own client, where its reply is restored too): translated for the
 * pod. 1 if so; the caller sends it back in. */
static __always_inline int rr_icmp_hairpin(struct __sk_buff *skb)
{
    return rr_icmp_translate(skb, RR_CT_HAIRPIN, RR_CT_HAIRPIN);
}

#endif
