"""Which parameters learn, and the modules' train/eval modes that go with it."""

# The official fine_tune(): for the RN50 trunk the last three children (layer2..layer4; the
# official code tests 'resnet' in "RN50", which fails, and takes this branch), for a ViT the last two.
OFFICIAL_TRAINED_CHILDREN = {"resnet": 3, "vit": 2}


def backbone_parts(image_encoder):
    """The backbone modules the official code fine-tunes when fine_tune is true."""
    children = list(image_encoder.net.children())
    return children[-OFFICIAL_TRAINED_CHILDREN[image_encoder.kind]:]


def set_trainable(net, freeze_backbone=True, freeze_encoder=False):
    """requires_grad on what learns; returns the parameters to optimise (each once: the tied
    embedding and output weights are one tensor)."""
    net.requires_grad_(False)
    net.decoder.requires_grad_(True)
    if not freeze_encoder:
        encoder = net.encoder
        for name, child in encoder.named_children():
            if name != "encoder":
                child.requires_grad_(True)
        encoder.img_queries.requires_grad_(True)
        image_encoder = encoder.encoder
        if image_encoder.proj is not None:
            image_encoder.proj.requires_grad_(True)
        if not freeze_backbone:
            for part in backbone_parts(image_encoder):
                part.requires_grad_(True)
    seen, params = set(), []
    for p in net.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return params


def train_mode(net, freeze_backbone=True, freeze_encoder=False):
    """train() where something learns; a frozen part stays in eval(), its batch norms' statistics kept."""
    net.train()
    if freeze_encoder:
        net.encoder.eval()
    elif freeze_backbone:
        net.encoder.encoder.net.eval()
    else:
        trained = {id(part) for part in backbone_parts(net.encoder.encoder)}
        for child in net.encoder.encoder.net.children():
            if id(child) not in trained:
                child.eval()
    return net
