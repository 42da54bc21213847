"""Facts about the host netmon runs on, read from it and named for people.

    system      privileges, interface names and indexes, the default route's interface
    interfaces  which interfaces a run watches (Selection) and what each index is called
    proxmox     which guest an interface belongs to, and its name from the guest's config

Plain Python: it reads /proc, /etc/pve and the socket module, never the BPF object.
Everything above it may import it; it imports only netmon.errors.
"""
