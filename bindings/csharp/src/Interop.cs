// Marshalling helpers shared by every wrapper: UTF-8 text as NUL-terminated byte arrays,
// output buffers retried at the size the library asks for, and errors as TetherException.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Tether
{
    internal delegate Result BufferCall(byte[] buffer, UIntPtr capacity, out UIntPtr length);

    internal static class Interop
    {
        internal const string Lib = "tether";

        private static class Native
        {
            [DllImport(Lib, CallingConvention = CallingConvention.Cdecl)]
            public static extern Result tether_last_error(byte[] buf, UIntPtr cap, out UIntPtr outLen);
        }

        /// <summary>NUL-terminated UTF-8, or null for null.</summary>
        internal static byte[] Utf8(string text)
        {
            if (text == null)
            {
                return null;
            }
            int n = Encoding.UTF8.GetByteCount(text);
            byte[] bytes = new byte[n + 1];
            Encoding.UTF8.GetBytes(text, 0, text.Length, bytes, 0);
            return bytes;
        }

        /// <summary>A NUL-terminated UTF-8 string owned by the library, or null.</summary>
        internal static string FromUtf8(IntPtr p)
        {
            if (p == IntPtr.Zero)
            {
                return null;
            }
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0)
            {
                n++;
            }
            return FromUtf8(p, n);
        }

        internal static string FromUtf8(IntPtr p, int length)
        {
            if (p == IntPtr.Zero)
            {
                return null;
            }
            byte[] bytes = new byte[length];
            Marshal.Copy(p, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }

        internal static byte[] Bytes(IntPtr p, UIntPtr length)
        {
            int n = checked((int)(ulong)length);
            byte[] bytes = new byte[n];
            if (n > 0)
            {
                Marshal.Copy(p, bytes, 0, n);
            }
            return bytes;
        }

        /// <summary>The message of the last failure on this thread.</summary>
        internal static string LastError()
        {
            UIntPtr len;
            Result r = Native.tether_last_error(null, UIntPtr.Zero, out len);
            if (r == Result.NotFound)
            {
                return "no message recorded";
            }
            for (int attempt = 0; attempt < 4; attempt++)
            {
                byte[] buf = new byte[(int)(ulong)len + 1];
                r = Native.tether_last_error(buf, (UIntPtr)buf.Length, out len);
                if (r == Result.Ok)
                {
                    return Encoding.UTF8.GetString(buf, 0, (int)(ulong)len);
                }
                if (r != Result.BufferTooSmall)
                {
                    break;
                }
            }
            return "no message recorded";
        }

        /// <summary>The exception for a failed call, read on the thread that made it.</summary>
        internal static TetherException Error(Result result)
        {
            return new TetherException(result, LastError());
        }

        internal static void Check(Result result)
        {
            if (result != Result.Ok)
            {
                throw Error(result);
            }
        }

        /// <summary>
        /// Calls a function that writes text into a caller's buffer: starts at
        /// <see cref="Library.InitialBufferSize"/> and, when the library answers
        /// BUFFER_TOO_SMALL with the size it needs, retries with exactly that size.
        /// </summary>
        internal static string CallString(BufferCall call)
        {
            byte[] buffer = new byte[Math.Max(1, Library.InitialBufferSize)];
            for (int attempt = 0; attempt < 4; attempt++)
            {
                UIntPtr len;
                Result r = call(buffer, (UIntPtr)buffer.Length, out len);
                if (r == Result.Ok)
                {
                    return Encoding.UTF8.GetString(buffer, 0, checked((int)(ulong)len));
                }
                if (r != Result.BufferTooSmall)
                {
                    throw Error(r);
                }
                buffer = new byte[checked((int)(ulong)len + 1)];
            }
            throw new TetherException(Result.BufferTooSmall, "the output kept growing between calls");
        }

        /// <summary>
        /// Pins a safe handle for the length of a call and gives its pointer (IntPtr.Zero for
        /// null), for parameters that accept NULL.
        /// </summary>
        internal static IntPtr AddRef(SafeHandle handle, ref bool added)
        {
            if (handle == null)
            {
                return IntPtr.Zero;
            }
            handle.DangerousAddRef(ref added);
            return handle.DangerousGetHandle();
        }
    }
}
