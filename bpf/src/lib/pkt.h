/* Packet parsing and address/port rewriting with checksum fix-ups (IPv4 TCP/UDP). */
#ifndef RR_LIB_PKT_H
#define RR_LIB_PKT_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>

#define RR_ETH_LEN 14
#define RR_IP_SADDR_OFF (RR_ETH_LEN + 12)
#define RR_IP_DADDR_OFF (RR_ETH_LEN + 16)
#define RR_IP_CSUM_OFF (RR_ETH_LEN + 10)

struct rr_pkt {
    struct rr_ct_key t; /* tuple as seen on the wire, dir = forward */
    __u32 l4off;
};

/* Fill p from skb. Returns 0 for an IPv4 TCP/UDP packet that carries ports. */
static __always_inline int rr_parse(struct __sk_buff *skb, struct rr_pkt *p)
{
    struct iphdr ip;
    __be16 ports[2];

    if (skb->protocol != htons(ETH_P_IP))
        return -1;
    if (bpf_skb_load_bytes(skb, RR_ETH_LEN, &ip, sizeof(ip)) < 0)
        return -1;
    if (ip.version != 4 || ip.ihl < 5)
        return -1;
    if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
        return -1;
    if (ip.frag_off & htons(0x1fff)) /* a later fragment has no ports */
        return -1;
    p->l4off = RR_ETH_LEN + ip.ihl * 4;
    if (bpf_skb_load_bytes(skb, p->l4off, ports, sizeof(ports)) < 0)
        return -1;
    __builtin_memset(&p->t, 0, sizeof(p->t));
    p->t.saddr.w[0] = ip.saddr;
    p->t.daddr.w[0] = ip.daddr;
    p->t.sport = ports[0];
    p->t.dport = ports[1];
    p->t.proto = ip.protocol;
    p->t.family = RR_AF_INET;
    return 0;
}

static __always_inline int rr_l4_csum_off(struct rr_pkt *p)
{
    return p->l4off + (p->t.proto == IPPROTO_TCP ? 16 : 6);
}

static __always_inline __u64 rr_l4_flags(struct rr_pkt *p)
{
    return p->t.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/* Rewrite one IPv4 address (source if is_src) and its port, fixing both checksums. */
static __always_inline int rr_rewrite(struct __sk_buff *skb, struct rr_pkt *p, int is_src,
                                      __be32 old_ip, __be32 new_ip, __be16 old_port,
                                      __be16 new_port)
{
    int aoff = is_src ? RR_IP_SADDR_OFF : RR_IP_DADDR_OFF;
    int poff = p->l4off + (is_src ? 0 : 2);
    int coff = rr_l4_csum_off(p);
    __u64 l4f = rr_l4_flags(p);

    if (old_ip != new_ip) {
        if (bpf_l4_csum_replace(skb, coff, old_ip, new_ip,
                                l4f | BPF_F_PSEUDO_HDR | sizeof(new_ip)) < 0)
            return -1;
        if (bpf_l3_csum_replace(skb, RR_IP_CSUM_OFF, old_ip, new_ip, sizeof(new_ip)) < 0)
            return -1;
        if (bpf_skb_store_bytes(skb, aoff, &new_ip, sizeof(new_ip), 0) < 0)
            return -1;
    }
    if (old_port != new_port) {
        if (bpf_l4_csum_replace(skb, coff, old_port, new_port, l4f | sizeof(new_port)) < 0)
            return -1;
        if (bpf_skb_store_bytes(skb, poff, &new_port, sizeof(new_port), 0) < 0)
            return -1;
    }
    return 0;
}

#endif
