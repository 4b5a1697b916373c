// Images between tensors and an application's textures, one pixel per
// invocation over a grid of tiles: image i sits at column i % columns, row
// i / columns, `padding` pixels apart, the grid's corner at `origin`.
//
// write_*: f32 image tensors [N, C, H, W] or [N, H, W, C] (C = 3 or 4, from
// `offset` in a dense buffer) into a storage texture. Values in [0, 1], or
// [-1, 1] mapped to [0, 1]; clamped. Three channels get alpha 1; padding
// and empty cells are opaque black. The texture format is part of a storage
// texture's type, so each format has its own entry point and binding.
//
// read_image: the reverse from any float texture (rgba8unorm, bgra8unorm,
// rgba16float, rgba32float: textureLoad returns RGBA in [0, 1] or as
// stored), padding skipped, the first C channels kept.

const TILE: u32 = 16u;

struct TextureParams {
    images: u32,
    channels: u32,
    height: u32,
    width: u32,
    // 1: channels last ([.., H, W, C]); 0: channels first.
    channels_last: u32,
    // 1: tensor values in [-1, 1]; 0: in [0, 1].
    signed_range: u32,
    columns: u32,
    padding: u32,
    origin_x: u32,
    origin_y: u32,
    // The grid's size in pixels.
    region_w: u32,
    region_h: u32,
    // First element of the tensor in its buffer.
    offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: TextureParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var target_rgba8: texture_storage_2d<rgba8unorm, write>;
@group(0) @binding(4) var target_rgba16f: texture_storage_2d<rgba16float, write>;
@group(0) @binding(5) var source: texture_2d<f32>;

// Element index of channel c of pixel (x, y) of image i, relative to offset.
fn element(i: u32, c: u32, y: u32, x: u32) -> u32 {
    let plane = params.height * params.width;
    let image = i * params.channels * plane;
    if (params.channels_last == 1u) {
        return image + (y * params.width + x) * params.channels + c;
    }
    return image + c * plane + y * params.width + x;
}

// The tile under grid pixel p: (image, x, y), or image = images when p is
// padding or an empty cell.
fn tile_at(p: vec2<u32>) -> vec3<u32> {
    let cell_w = params.width + params.padding;
    let cell_h = params.height + params.padding;
    let col = p.x / cell_w;
    let row = p.y / cell_h;
    let x = p.x % cell_w;
    let y = p.y % cell_h;
    let i = row * params.columns + col;
    if (col >= params.columns || x >= params.width || y >= params.height || i >= params.images) {
        return vec3<u32>(params.images, 0u, 0u);
    }
    return vec3<u32>(i, x, y);
}

fn texel(p: vec2<u32>) -> vec4<f32> {
    let t = tile_at(p);
    if (t.x >= params.images) {
        return vec4<f32>(0.0, 0.0, 0.0, 1.0);
    }
    var rgba = vec4<f32>(0.0, 0.0, 0.0, 1.0);
    for (var c = 0u; c < min(params.channels, 4u); c += 1u) {
        var v = src[params.offset + element(t.x, c, t.z, t.y)];
        if (params.signed_range == 1u) {
            v = (v + 1.0) * 0.5;
        }
        rgba[c] = clamp(v, 0.0, 1.0);
    }
    return rgba;
}

@compute @workgroup_size(TILE, TILE)
fn write_rgba8unorm(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.region_w || gid.y >= params.region_h) { return; }
    let at = vec2<u32>(params.origin_x + gid.x, params.origin_y + gid.y);
    textureStore(target_rgba8, at, texel(gid.xy));
}

@compute @workgroup_size(TILE, TILE)
fn write_rgba16float(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.region_w || gid.y >= params.region_h) { return; }
    let at = vec2<u32>(params.origin_x + gid.x, params.origin_y + gid.y);
    textureStore(target_rgba16f, at, texel(gid.xy));
}

@compute @workgroup_size(TILE, TILE)
fn read_image(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.region_w || gid.y >= params.region_h) { return; }
    let t = tile_at(gid.xy);
    if (t.x >= params.images) { return; }
    let at = vec2<u32>(params.origin_x + gid.x, params.origin_y + gid.y);
    let rgba = textureLoad(source, at, 0);
    for (var c = 0u; c < min(params.channels, 4u); c += 1u) {
        var v = rgba[c];
        if (params.signed_range == 1u) {
            v = v * 2.0 - 1.0;
        }
        dst[element(t.x, c, t.z, t.y)] = v;
    }
}
