// 2-D convolution on the CPU through oneDNN, as three XLA FFI handlers.
//
// sembridge_jax/models/onednn.py compiles this file once per machine (g++, against
// jaxlib's FFI headers and the onednn-cpu-gomp wheel) and registers the handlers with
// jax.ffi. The convolution is the one of models/conv.py's docstring: NHWC input,
// HWIO kernel (kh, kw, C/G, O) with output channel o = g * (O/G) + m, explicit zero
// padding, strides, no dilation, float32.
//
//   sembridge_conv_fwd          (x, k)  -> y
//   sembridge_conv_bwd_data     (dy, k) -> dx
//   sembridge_conv_bwd_weights  (x, dy) -> dk
//
// Activations stay in JAX's NHWC layout, which oneDNN's brgemm kernels read directly;
// the kernel is reordered to the layout the primitive asks for (`format_tag::any`),
// which costs little next to the convolution. Primitive descriptors and primitives are
// built once per shape and cached; every call gets its own scratchpad, so one primitive
// may run on several threads at once (XLA runs one call per fake CPU device).
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, groups;
  int64_t stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right;
  int64_t oh, ow;

  auto key() const {
    return std::make_tuple(n, h, w, c, kh, kw, o, groups, stride_h, stride_w, pad_top,
                           pad_bottom, pad_left, pad_right);
  }
  // Plain layouts of the JAX buffers, as oneDNN memory descriptors.
  memory::desc src() const {
    return memory::desc({n, c, h, w}, memory::data_type::f32, memory::format_tag::nhwc);
  }
  memory::desc dst() const {
    return memory::desc({n, o, oh, ow}, memory::data_type::f32, memory::format_tag::nhwc);
  }
  Dims weight_dims() const {
    const int64_t ig = c / groups, og = o / groups;
    return groups == 1 ? Dims{o, ig, kh, kw} : Dims{groups, og, ig, kh, kw};
  }
  // The HWIO kernel (kh, kw, C/G, O) described by strides over oneDNN's logical
  // (O, I, KH, KW) or (G, O/G, I/G, KH, KW) dimensions.
  memory::desc user_weights() const {
    const int64_t ig = c / groups, og = o / groups;
    Dims strides = groups == 1 ? Dims{1, o, kw * ig * o, ig * o}
                               : Dims{og, 1, o, kw * ig * o, ig * o};
    return memory::desc(weight_dims(), memory::data_type::f32, strides);
  }
  memory::desc any_weights() const {
    return memory::desc(weight_dims(), memory::data_type::f32, memory::format_tag::any);
  }
  Dims strides() const { return {stride_h, stride_w}; }
  Dims pad_l() const { return {pad_top, pad_left}; }
  Dims pad_r() const { return {pad_bottom, pad_right}; }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

dnnl::reorder Reorder(const memory::desc& from, const memory::desc& to) {
  return dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), from, Engine(), to));
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The forward primitive descriptor is also the hint the backward ones need.
dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      g.src(), g.any_weights(), g.dst(), g.strides(), g.pad_l(), g.pad_r(),
      UserScratchpad());
}

enum class Kind { kForward, kBackwardData, kBackwardWeights };

// One convolution primitive for one geometry, with the reorder between the user's HWIO
// kernel and the kernel layout the primitive chose: HWIO -> that layout for the forward
// and backward-data passes (which read the kernel), back for backward-weights (which
// writes its gradient).
struct Prepared {
  dnnl::primitive conv;
  memory::desc kernel;
  memory::desc scratchpad;
  bool reorders_kernel;
  dnnl::reorder reorder;
};

template <typename Primitive, typename Desc>
Prepared MakePrepared(const Desc& pd, const memory::desc& kernel, const Geometry& g,
                      bool kernel_is_output) {
  const bool reorders = kernel != g.user_weights();
  dnnl::reorder reorder;
  if (reorders) {
    reorder = kernel_is_output ? Reorder(kernel, g.user_weights())
                               : Reorder(g.user_weights(), kernel);
  }
  return Prepared{Primitive(pd), kernel, pd.scratchpad_desc(), reorders,
                  reorder};
}

Prepared Prepare(Kind kind, const Geometry& g) {
  const auto algorithm = dnnl::algorithm::convolution_direct;
  switch (kind) {
    case Kind::kForward: {
      auto pd = ForwardDesc(g);
      return MakePrepared<dnnl::convolution_forward>(pd, pd.weights_desc(), g, false);
    }
    case Kind::kBackwardData: {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), algorithm, g.src(), g.any_weights(), g.dst(), g.strides(), g.pad_l(),
          g.pad_r(), ForwardDesc(g), UserScratchpad());
      return MakePrepared<dnnl::convolution_backward_data>(pd, pd.weights_desc(), g, false);
    }
    case Kind::kBackwardWeights:
    default: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), algorithm, g.src(), g.any_weights(), g.dst(), g.strides(), g.pad_l(),
          g.pad_r(), ForwardDesc(g), UserScratchpad());
      return MakePrepared<dnnl::convolution_backward_weights>(pd, pd.diff_weights_desc(), g,
                                                              true);
    }
  }
}

// Primitives are built once per (kind, geometry) and never evicted (a model has a few
// dozen distinct convolutions).
const Prepared& Cached(Kind kind, const Geometry& g) {
  static std::mutex mutex;
  static std::map<std::pair<Kind, decltype(g.key())>, std::unique_ptr<Prepared>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[{kind, g.key()}];
  if (!slot) slot = std::make_unique<Prepared>(Prepare(kind, g));
  return *slot;
}

// Builds the geometry from the NHWC activation ``x``, the HWIO kernel ``k`` and the
// attributes, and checks all of them against the output shape ``y`` XLA allocated: a
// mismatch must come back as an error, never reach oneDNN as an out-of-bounds access.
ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k,
                        int64_t groups, int64_t stride_h, int64_t stride_w, int64_t pad_top,
                        int64_t pad_bottom, int64_t pad_left, int64_t pad_right,
                        ffi::Span<const int64_t> y, Geometry* out) {
  if (x.size() != 4 || y.size() != 4 || k.size() != 4) {
    return ffi::Error::InvalidArgument("onednn conv: activations NHWC, kernel HWIO");
  }
  if (groups < 1 || stride_h < 1 || stride_w < 1 || k[0] < 1 || k[1] < 1 || pad_top < 0 ||
      pad_bottom < 0 || pad_left < 0 || pad_right < 0) {
    return ffi::Error::InvalidArgument("onednn conv: groups, strides and kernel >= 1, pads >= 0");
  }
  Geometry& g = *out;
  g = Geometry{x[0], x[1], x[2], x[3], k[0], k[1], k[3], groups, stride_h, stride_w,
               pad_top, pad_bottom, pad_left, pad_right, y[1], y[2]};
  const int64_t oh = (g.h + pad_top + pad_bottom - g.kh) / stride_h + 1;
  const int64_t ow = (g.w + pad_left + pad_right - g.kw) / stride_w + 1;
  if (g.c % groups || g.o % groups || k[2] * groups != g.c || oh != g.oh || ow != g.ow ||
      y[0] != g.n || y[3] != g.o) {
    return ffi::Error::InvalidArgument("onednn conv: inconsistent shapes or attributes");
  }
  return ffi::Error::Success();
}

// Runs one primitive on the XLA buffers: two activations (``first`` and ``second``, in
// NHWC, each with its oneDNN argument id and descriptor) and the kernel (HWIO, read or,
// for backward-weights, written).
ffi::Error Execute(Kind kind, const Geometry& g, int first_arg, const memory::desc& first_desc,
                   void* first, int second_arg, const memory::desc& second_desc,
                   void* second, int kernel_arg, void* kernel) {
  try {
    const Prepared& p = Cached(kind, g);
    auto& stream = Stream();
    memory user_kernel(g.user_weights(), Engine(), kernel);
    memory kernel_memory = p.reorders_kernel ? memory(p.kernel, Engine()) : user_kernel;
    const bool writes_kernel = kind == Kind::kBackwardWeights;
    if (p.reorders_kernel && !writes_kernel) {
      p.reorder.execute(stream, user_kernel, kernel_memory);
    }
    p.conv.execute(stream, {{first_arg, memory(first_desc, Engine(), first)},
                            {second_arg, memory(second_desc, Engine(), second)},
                            {kernel_arg, kernel_memory},
                            {DNNL_ARG_SCRATCHPAD, memory(p.scratchpad, Engine())}});
    if (p.reorders_kernel && writes_kernel) {
      p.reorder.execute(stream, kernel_memory, user_kernel);
    }
    stream.wait();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {  // bad_alloc, system_error: never across the FFI
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  } catch (...) {
    return ffi::Error::Internal("onednn conv: unknown C++ exception");
  }
}

ffi::Error ConvForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                       ffi::ResultBuffer<ffi::F32> y, int64_t groups, int64_t stride_h,
                       int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                       int64_t pad_left, int64_t pad_right) {
  Geometry g;
  if (auto error = MakeGeometry(x.dimensions(), k.dimensions(), groups, stride_h, stride_w,
                                pad_top, pad_bottom, pad_left, pad_right, y->dimensions(),
                                &g);
      error.failure()) {
    return error;
  }
  return Execute(Kind::kForward, g, DNNL_ARG_SRC, g.src(), x.typed_data(), DNNL_ARG_DST,
                 g.dst(), y->typed_data(), DNNL_ARG_WEIGHTS, k.typed_data());
}

ffi::Error ConvBackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k,
                            ffi::ResultBuffer<ffi::F32> dx, int64_t groups,
                            int64_t stride_h, int64_t stride_w, int64_t pad_top,
                            int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g;
  if (auto error = MakeGeometry(dx->dimensions(), k.dimensions(), groups, stride_h, stride_w,
                                pad_top, pad_bottom, pad_left, pad_right, dy.dimensions(),
                                &g);
      error.failure()) {
    return error;
  }
  return Execute(Kind::kBackwardData, g, DNNL_ARG_DIFF_DST, g.dst(), dy.typed_data(),
                 DNNL_ARG_DIFF_SRC, g.src(), dx->typed_data(), DNNL_ARG_WEIGHTS,
                 k.typed_data());
}

ffi::Error ConvBackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dk, int64_t groups,
                               int64_t stride_h, int64_t stride_w, int64_t pad_top,
                               int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  Geometry g;
  if (auto error = MakeGeometry(x.dimensions(), dk->dimensions(), groups, stride_h, stride_w,
                                pad_top, pad_bottom, pad_left, pad_right, dy.dimensions(),
                                &g);
      error.failure()) {
    return error;
  }
  return Execute(Kind::kBackwardWeights, g, DNNL_ARG_SRC, g.src(), x.typed_data(),
                 DNNL_ARG_DIFF_DST, g.dst(), dy.typed_data(), DNNL_ARG_DIFF_WEIGHTS,
                 dk->typed_data());
}

template <typename Binding>
auto WithAttributes(Binding binding) {
  return std::move(binding).template Attr<int64_t>("groups")
      .template Attr<int64_t>("stride_h")
      .template Attr<int64_t>("stride_w")
      .template Attr<int64_t>("pad_top")
      .template Attr<int64_t>("pad_bottom")
      .template Attr<int64_t>("pad_left")
      .template Attr<int64_t>("pad_right");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SembridgeConvForward, ConvForward,
    WithAttributes(ffi::Ffi::Bind()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Ret<ffi::Buffer<ffi::F32>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SembridgeConvBackwardData, ConvBackwardData,
    WithAttributes(ffi::Ffi::Bind()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Ret<ffi::Buffer<ffi::F32>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    SembridgeConvBackwardWeights, ConvBackwardWeights,
    WithAttributes(ffi::Ffi::Bind()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Arg<ffi::Buffer<ffi::F32>>()
                       .Ret<ffi::Buffer<ffi::F32>>()));
