"""
CUDA support for PyNeuralODEJL, loaded when CUDA.jl is loaded next to it (a package extension).

`device = "cuda"` moves the state, the parameters and the cotangents with `CuArray(x)`, which keeps the
element type: Float64 stays Float64 unless `dtype = "float32"` was asked for. (`CUDA.cu` and
MLDataDevices' default `gpu_device()` would convert to Float32.) The layout permutation and the
gradient mapping run on the host, so no scalar indexing touches the GPU.
"""
module PyNeuralODEJLCUDAExt

using CUDA: CUDA, CuArray
using PyNeuralODEJL: PyNeuralODEJL

PyNeuralODEJL._device_array(::Val{:cuda}, x::AbstractArray) = CuArray(x)
PyNeuralODEJL.device_functional(::Val{:cuda}) = CUDA.functional()

end # module PyNeuralODEJLCUDAExt
